"""Kernel managers for batch runs: this interpreter's kernel, its log in a file.

``jupyter kernelspec`` lookups find the first ``python3`` spec on the Jupyter
path, and a user-level one (``~/.local/share/jupyter/kernels``) can point at
another Python that lacks AstrID. The batch runner therefore builds the spec
of its own interpreter (as ``ipykernel install`` would write it) and hands
nbclient a kernel manager that always launches it.

A kernel's own stderr (its log: start-up notes, interrupts, crashes) would
otherwise land on the terminal of whichever Dask worker ran it, interleaved
between tasks; it goes to a file beside the executed notebook instead. What
cells print is captured by the kernel into the notebook, not this file.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

__all__ = ["kernel_manager_class"]


@functools.cache
def _current_spec_dict() -> dict:
    try:
        from ipykernel.kernelspec import get_kernel_dict
    except ImportError as exc:
        raise ImportError(
            "running notebooks needs the optional package 'ipykernel': "
            "install it with  pip install 'astrid[notebooks]'"
        ) from exc
    spec = get_kernel_dict()
    spec["argv"] = [sys.executable, *spec["argv"][1:]]
    return spec


def kernel_manager_class(
    current_interpreter: bool, log_path: str | os.PathLike | None = None
) -> type:
    """Kernel manager class to pass to papermill as ``kernel_manager_class``.

    Parameters
    ----------
    current_interpreter : bool
        True: every kernel name starts an IPython kernel of ``sys.executable``
        (CurveZMQ-encrypted where pyzmq and ipykernel support it, which also
        silences ipykernel's warning about plain TCP). False: Jupyter's
        kernelspec of the requested name.
    log_path : path, optional
        File that receives the kernel process's stdout and stderr.

    Returns
    -------
    type
        A subclass of ``jupyter_client.manager.AsyncKernelManager``.
    """
    import zmq
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    namespace: dict = {}
    if current_interpreter:
        spec_values = _current_spec_dict()
        spec_kwargs = {k: v for k, v in spec_values.items() if k in KernelSpec.class_trait_names()}

        class CurrentInterpreterSpecManager(KernelSpecManager):
            def get_kernel_spec(self, kernel_name: str) -> KernelSpec:  # every name is this kernel
                return KernelSpec(resource_dir="", **spec_kwargs)

        namespace["_kernel_spec_manager_default"] = default("kernel_spec_manager")(
            lambda self: CurrentInterpreterSpecManager(parent=self)
        )
        curve = "curve" in spec_values.get("metadata", {}).get("supported_encryption", [])
        if (
            "transport_encryption" in AsyncKernelManager.class_trait_names()
            and curve
            and zmq.has("curve")
        ):
            namespace["_transport_encryption_default"] = default("transport_encryption")(
                lambda self: "auto"
            )

    if log_path is not None:
        log_path = Path(log_path)

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # The child gets its own copy of the descriptor; ours closes at once.
            with open(log_path, "ab") as log:
                kw.setdefault("stdout", log)
                kw.setdefault("stderr", log)
                await AsyncKernelManager._async_launch_kernel(self, kernel_cmd, **kw)

        namespace["_async_launch_kernel"] = _async_launch_kernel
    return type("AstridKernelManager", (AsyncKernelManager,), namespace)
