"""AdamW with decoupled weight decay and the paper's per-update learning-rate schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

from gptkit.errors import GptkitError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay every weight matrix and embedding (2+ dims); never biases or LayerNorm gains."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def schedule_factor(step: int, schedule: str, warmup: int, total: int) -> float:
    """Multiplier of the peak lr after ``step`` updates: linear warmup, then cosine/linear to 0 or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def fused_adamw_available(device: torch.device) -> bool:
    """Whether ``AdamW(fused=True)`` runs on ``device``: CUDA and CPUs.

    On a 2-core CPU the fused step is 5x faster than the default multi-tensor one (1.8 against
    10.5 ms for 5.2M parameters), about 2% of a small model's training step.
    """
    return device.type in ("cuda", "cpu")


def choose_fused(requested: bool | None, device: torch.device, grad_scaler: bool, clipping: bool) -> bool:
    """``optim.fused`` resolved: null means on where available, except with a GradScaler and clipping.

    With ``16-mixed`` precision Lightning unscales gradients before clipping them, which fused AdamW
    does not allow (it unscales inside its own step), so the two cannot be combined.
    """
    conflict = grad_scaler and clipping
    if requested is None:
        return fused_adamw_available(device) and not conflict
    if requested and conflict:
        raise GptkitError(
            "optim.fused=true cannot be combined with trainer.precision=16-mixed and trainer.gradient_clip_val: "
            "fused AdamW unscales the gradients inside its step, so they cannot be clipped before it. "
            "Set optim.fused=null (or false), use trainer.precision=bf16-mixed, or set trainer.gradient_clip_val=null"
        )
    return requested


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas, eps: float, fused: bool):
    # fused=False would also turn off torch's multi-tensor (foreach) default: None keeps it
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps,
                             fused=True if fused else None)
