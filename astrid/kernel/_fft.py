"""Image-sized convolutions by FFT and the box maximum, as the kernel step applies them.

At 4096² these are most of the kernel step's time (docs/kernel.md): each padded float32 transform
costs about 0.05 s forward and 0.08 s back, so what is not transformed, copied or allocated
twice is what is saved here.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

__all__ = ["SameConvolution", "box_max"]


class SameConvolution:
    """ "Same"-size convolutions of images of one shape, zero outside, by real FFTs.

    Each kernel size gets the padded transform size ``next_fast_len(n + k − 1)`` per axis; the
    padded input is written into one buffer per transform size, reused between images, instead of
    a fresh zero-padded copy per transform.

    Parameters
    ----------
    shape : tuple of int
        (ny, nx) of the images.
    work : numpy dtype
        Working precision (float32 transforms are half the cost of float64 ones).
    """

    def __init__(self, shape, work):
        self.shape = tuple(int(n) for n in shape)
        self.work = np.dtype(work).type
        self._buffers = {}

    def padded_shape(self, k: int) -> tuple:
        """The transform size for kernels of side ``k``."""
        ny, nx = self.shape
        return (
            scipy.fft.next_fast_len(ny + k - 1, real=True),
            scipy.fft.next_fast_len(nx + k - 1, real=True),
        )

    def image_spectrum(self, image, k: int, keep=None) -> np.ndarray:
        """The transform of ``image`` (an array of ``shape`` or a scalar) for kernels of side ``k``.

        ``keep``: pixels to use; the others enter as zeros.
        """
        fshape = self.padded_shape(k)
        buffer = self._buffers.get(fshape)
        if buffer is None:
            buffer = self._buffers[fshape] = np.zeros(fshape, self.work)
        ny, nx = self.shape
        view = buffer[:ny, :nx]
        if keep is None:
            view[...] = image
        else:
            view[...] = 0
            np.copyto(view, image, casting="unsafe", where=keep)
        return scipy.fft.rfft2(buffer, workers=-1)

    def kernel_spectrum(self, kernel) -> np.ndarray:
        """The transform of a small (k, k) kernel, the same numbers as ``rfft2`` of it zero-padded.

        The padded kernel has only k non-zero rows: those are transformed along x alone, and the
        full-size pass is the one along y.
        """
        kernel = np.asarray(kernel, dtype=self.work)
        fy, fx = self.padded_shape(kernel.shape[-1])
        rows = scipy.fft.rfft(kernel, n=fx, axis=1, workers=-1)
        full = np.zeros((fy, rows.shape[1]), dtype=rows.dtype)
        full[: kernel.shape[0]] = rows
        return scipy.fft.fft(full, axis=0, workers=-1, overwrite_x=True)

    def back(self, spectrum, k: int) -> np.ndarray:
        """The "same"-size image whose transform is ``spectrum`` (overwritten), kernel side ``k``."""
        fshape = self.padded_shape(k)
        half = k // 2
        ny, nx = self.shape
        full = scipy.fft.irfft2(spectrum, s=fshape, workers=-1, overwrite_x=True)
        return full[half : half + ny, half : half + nx]

    def convolve(self, image, kernel, keep=None) -> np.ndarray:
        """``image`` (pixels outside ``keep`` as zeros) convolved with ``kernel``."""
        k = np.shape(kernel)[-1]
        spectrum = self.kernel_spectrum(kernel)
        spectrum *= self.image_spectrum(image, k, keep)
        return self.back(spectrum, k)


def _running_max(image, half: int, axis: int) -> np.ndarray:
    """Maximum over ``[i − half, i + half]`` along ``axis``, the window clipped at the edges."""
    a = np.moveaxis(image, axis, 0)
    n = a.shape[0]
    width = 2 * half + 1
    # Padding with −inf makes the clipped windows plain windows; windows of 1, 2, 4, … then double
    # up to the largest power of two within the width, and two overlapping ones cover the rest.
    pad = np.full((n + 2 * half,) + a.shape[1:], -np.inf, dtype=a.dtype)
    pad[half : half + n] = a
    span = 1
    while 2 * span <= width:
        np.maximum(pad[:-span], pad[span:], out=pad[:-span])
        span *= 2
    out = pad[:n]
    if span < width:
        out = np.maximum(pad[:n], pad[width - span : width - span + n])
    return np.moveaxis(out, 0, axis)


def box_max(image, half: int) -> np.ndarray:
    """Maximum over the (2 ``half`` + 1)² box around each pixel, the box clipped at the edges.

    The numbers of ``scipy.ndimage.maximum_filter(image, 2 * half + 1)`` (whose mirrored edges
    repeat pixels already in the box), in a few whole-array maxima per axis instead of a running
    window per line.
    """
    image = np.asarray(image)
    if half <= 0:
        return image.copy()
    return _running_max(_running_max(image, half, 0), half, 1)
