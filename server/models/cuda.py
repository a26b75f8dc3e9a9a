"""Whether ONNX Runtime's CUDA provider can run on this host, found out once, before any session asks for it.

`onnxruntime-gpu` lists CUDA among its available providers on every host. Asked for it where there is no NVIDIA
driver, no GPU or no CUDA libraries, each session prints a red error of ONNX Runtime's own and falls back to the
CPU. So the server looks first: a GPU through NVML (the driver's management library), then the CUDA and cuDNN
libraries this ONNX Runtime build loads. Where either is missing it logs one line of its own and asks for the CPU.
"""

from __future__ import annotations

import ctypes
import functools
import logging

from vigil.telemetry.metrics.gpu import nvml_gpu_count

logger = logging.getLogger(__name__)

CUDNN_MAJOR = 9
"""cuDNN major version of the CUDA provider in the `onnxruntime-gpu` builds Vigil supports."""


@functools.cache
def cuda_unavailable_reason() -> str | None:
    """Why the CUDA provider cannot run here, or None when it can; logged once when it cannot."""
    reason = _no_device() or _missing_libraries()
    if reason is not None:
        logger.info("CUDA is not used: %s; models run on the CPU", reason)
    return reason


def _no_device() -> str | None:
    try:
        count = nvml_gpu_count()
    except Exception as exc:  # no library, no driver
        return f"no NVIDIA driver found ({type(exc).__name__}: {exc})"
    return None if count > 0 else "the NVIDIA driver reports no GPU"


def _missing_libraries() -> str | None:
    from onnxruntime.capi import build_and_package_info

    cuda = str(getattr(build_and_package_info, "cuda_version", "") or "")
    major = cuda.split(".")[0] if cuda else ""
    if not major:
        return "this ONNX Runtime was built without CUDA"
    missing = []
    for library in (f"libcudart.so.{major}", f"libcublas.so.{major}", f"libcublasLt.so.{major}",
                    f"libcudnn.so.{CUDNN_MAJOR}"):
        try:
            ctypes.CDLL(library)
        except OSError:
            missing.append(library)
    if missing:
        return f"the CUDA {major} libraries ONNX Runtime needs are not on the loader's path ({', '.join(missing)})"
    return None
