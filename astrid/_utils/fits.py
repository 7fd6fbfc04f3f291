"""One rule for choosing the image HDU of a FITS file."""

from __future__ import annotations

from astropy.io import fits

#: Extension names that hold a mask or variance plane beside an image, never the image itself.
AUXILIARY_EXTNAMES = ("MASK", "VARIANCE")


def is_image_hdu(hdu) -> bool:
    """True when ``hdu`` is a primary, image or tile-compressed HDU holding at least 2-D data."""
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return False
    if hdu.header.get("NAXIS", 0) >= 2:
        return True
    return isinstance(hdu, fits.CompImageHDU) and hdu.header.get("ZNAXIS", 0) >= 2


def first_image_hdu(hdul, *, skip=AUXILIARY_EXTNAMES) -> int | None:
    """Index of the first HDU of ``hdul`` holding a 2-D (or larger) image, or None.

    HDUs named in ``skip`` (AstrID's own mask and variance planes) are passed over.
    """
    for index, hdu in enumerate(hdul):
        if is_image_hdu(hdu) and hdu.name not in skip:
            return index
    return None
