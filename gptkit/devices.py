"""What gptkit needs to know about the hardware: default precision, peak FLOP/s, pinned memory.

Nothing here initialises CUDA: Lightning must still be able to fork its processes
(``trainer.strategy=ddp_fork`` / ``ddp_notebook``) after the run is built.
"""

from __future__ import annotations

import ctypes
import os

import torch
from omegaconf import DictConfig


def on_cuda(cfg: DictConfig) -> bool:
    """Whether the run trains on CUDA GPUs (``trainer.accelerator`` auto, gpu or cuda, and one is visible)."""
    return torch.cuda.is_available() and cfg.trainer.accelerator in ("auto", "gpu", "cuda")


def default_precision(cfg: DictConfig) -> str:
    """``bf16-mixed`` on GPUs with bf16 tensor cores (compute capability 8.0+, or unknown), ``16-mixed``
    on older ones, ``32-true`` elsewhere."""
    if not on_cuda(cfg):
        return "32-true"
    capability = cuda_capability()
    return "16-mixed" if capability is not None and capability < (8, 0) else "bf16-mixed"


def cuda_capability() -> tuple[int, int] | None:
    """The first visible GPU's compute capability, without initialising CUDA in this process.

    ``torch.cuda`` initialises CUDA to answer, after which Lightning cannot fork its processes
    (``trainer.strategy=ddp_fork`` or ``ddp_notebook``); NVML answers without that. ``None`` if
    NVML cannot be asked.
    """
    if torch.cuda.is_initialized():
        return torch.cuda.get_device_capability()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    index = int(visible) if visible.isdigit() else 0  # NVML numbers GPUs physically
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
    except (OSError, AttributeError):
        return None
    try:
        handle, major, minor = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int()
        ok = (nvml.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) == 0
              and nvml.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) == 0)
        return (major.value, minor.value) if ok else None
    except AttributeError:
        return None
    finally:
        nvml.nvmlShutdown()


def pin_memory(cfg: DictConfig) -> bool:
    """``data.pin_memory``; null: on when training on CUDA."""
    if cfg.data.pin_memory is not None:
        return cfg.data.pin_memory
    return on_cuda(cfg)


# Dense peaks of Hopper chips (datasheets), by the device name's words, first match: the PCIe and NVL
# boards are clocked lower than the SXM ones ("NVIDIA H100 80GB HBM3", "NVIDIA H200"). Lightning's table
# lists the 2:4-sparse figures for Hopper and does not recognise a plain "NVIDIA H200", so MFU against
# it would be halved or missing.
_HOPPER_DENSE = (
    (("h100", "pcie"), {torch.bfloat16: 756.0e12, torch.float16: 756.0e12, "tfloat32": 378.0e12, torch.float32: 51.2e12}),
    (("nvl",), {torch.bfloat16: 835.5e12, torch.float16: 835.5e12, "tfloat32": 417.5e12, torch.float32: 60.0e12}),
    ((), {torch.bfloat16: 989.4e12, torch.float16: 989.4e12, "tfloat32": 494.7e12, torch.float32: 66.9e12}),
)


def _hopper(device: torch.device) -> bool:
    return device.type == "cuda" and any(chip in torch.cuda.get_device_name(device).lower() for chip in ("h100", "h200"))


def _hopper_dense(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device).lower()
    return next(peaks for words, peaks in _HOPPER_DENSE if all(w in name for w in words))


def peak_flops(device: torch.device, dtype) -> float | None:
    """The device's dense peak FLOP/s for ``dtype``: Hopper from the datasheet, else Lightning's table."""
    from lightning_fabric.utilities.throughput import get_available_flops

    if _hopper(device):
        if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
            dtype = "tfloat32"
        return _hopper_dense(device).get(dtype)
    return get_available_flops(device, dtype)


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matrix products run in under a Lightning ``precision`` setting (``bf16-mixed``...)."""
    precision = str(precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    if precision.startswith("64"):
        return torch.float64
    return torch.float32
