"""Which device a model runs on: `device: auto | cpu | cuda` in the embeddings, matte and
prepare sections of params.yaml.

`cuda` where there is none stops the stage with a message saying how to get one; `auto` takes
the GPU when the worker process has one and otherwise the CPU, and the coordinator says so
once. Torch models (embeddings, the subject model's features, MTCNN) and ONNX Runtime sessions
(the U^2-Net mattes) are checked separately: the stock `onnxruntime` wheel has no CUDA
provider even on a GPU machine (`make gpu` installs `onnxruntime-gpu` in its place).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from core.errors import UserError

Device = Literal["auto", "cpu", "cuda"]

CUDA_PROVIDER = "CUDAExecutionProvider"

#: Where an NVIDIA driver shows itself: the Linux kernel module, its control device, and
#: WSL2's GPU device (which has neither of the first two).
CUDA_DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")


class DeviceError(UserError, RuntimeError):
    """`device: cuda` where this machine (or its ONNX Runtime) has no CUDA GPU."""


def cuda_driver_present() -> bool:
    """Whether this machine has a GPU driver CUDA could use, without importing torch.

    Importing torch to ask costs 3-5 s per stage on this project's machines: on a rerun after
    adding 1% of images it was a tenth of dedup's time, in the coordinator, whose workers
    import torch anyway to embed.
    """
    return any(os.path.exists(path) for path in CUDA_DRIVER_PATHS)


@lru_cache(maxsize=1)
def torch_has_cuda() -> bool:
    if not cuda_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


@lru_cache(maxsize=1)
def onnx_has_cuda() -> bool:
    import onnxruntime as ort

    return CUDA_PROVIDER in ort.get_available_providers()


def torch_device(requested: Device, what: str) -> str:
    """'cuda' or 'cpu' for a torch model, as `requested` allows on this machine."""
    if requested == "cpu":
        return "cpu"
    if torch_has_cuda():
        return "cuda"
    if requested == "cuda":
        raise DeviceError(f"{what}: device is cuda, but torch sees no CUDA GPU here; run on a "
                          "machine with one (and a CUDA build of torch), or set device: auto "
                          "or cpu")
    return "cpu"


def onnx_providers(requested: Device, what: str) -> list[str]:
    """ONNX Runtime execution providers for `requested` on this machine."""
    if requested != "cpu" and onnx_has_cuda():
        return [CUDA_PROVIDER, "CPUExecutionProvider"]
    if requested == "cuda":
        raise DeviceError(f"{what}: device is cuda, but ONNX Runtime has no CUDA provider here "
                          "(the stock onnxruntime wheel has none): run `make gpu` on a CUDA "
                          "machine to install onnxruntime-gpu instead, or set device: auto or cpu")
    return ["CPUExecutionProvider"]


_announced: set[str] = set()


def check(requested: Device, what: str, onnx: bool = False) -> None:
    """On the coordinator of a local run, before the work: raise DeviceError for `cuda` where
    there is none, and say once per process where `auto` put `what`.

    (On a Dask cluster each worker resolves `auto` itself: the coordinator may have no GPU.)"""
    if onnx:
        used = "cuda" if onnx_providers(requested, what)[0] == CUDA_PROVIDER else "cpu"
    else:
        used = torch_device(requested, what)
    line = (f"{what}: on the CUDA GPU" if used == "cuda" else
            f"{what}: on the CPU (device: auto, no CUDA GPU here)" if requested == "auto" else "")
    if line and line not in _announced:
        from core.console import console

        _announced.add(line)
        console.print(line)
