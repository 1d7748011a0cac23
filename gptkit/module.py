"""``GPTModule``: one LightningModule for pretraining and fine-tuning.

Pretraining is this module with no head: the LM loss is the whole objective. Fine-tuning adds a
task head over the hidden state at the ``_classify_`` token and keeps the LM loss on the same
inputs at weight ``lm_coef`` (paper: ``L3 = L2 + lambda * L1``). There is one code path; the head is
the only difference.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from gptkit.errors import GptkitError
from gptkit.model import GPT, GPTConfig, lm_loss
from gptkit.optim import make_optimizer, schedule_factor


class NonFiniteLossError(GptkitError):
    """The loss became NaN or infinite."""


class GPTModule(pl.LightningModule):
    """The GPT-1 backbone with the LM objective and, when ``task`` is set, a task head.

    Args:
        model: :class:`~gptkit.model.GPTConfig` fields.
        optim: the recipe's ``optim`` block (lr, weight_decay, betas, eps, schedule, warmup...).
        objective: the recipe's ``objective`` block (``lm_coef``, ``nonfinite``).
        task: a registered fine-tuning task name, or ``None`` for pretraining.
        tokenizer: ``{"kind", "path", "fingerprint"}`` of the run's tokenizer, recorded in checkpoints.
        compile: ``torch.compile`` the backbone (in ``configure_model``).
    """

    def __init__(
        self,
        model: dict,
        optim: dict,
        objective: dict | None = None,
        task: str | None = None,
        head_dropout: float = 0.1,
        tokenizer: dict | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = GPT(GPTConfig(**model))
        self.objective = {"lm_coef": 0.5, "nonfinite": "stop", **(objective or {})}
        self.task = None
        self.head: nn.Module | None = None
        if task is not None:
            self._init_task(task, head_dropout)
        self.val_loss = MeanMetric()
        self.flops_per_token: float | None = None
        self.flops_per_batch: float | None = None

    # -- fine-tuning hook -------------------------------------------------------------------------
    def _init_task(self, task: str, head_dropout: float) -> None:
        from gptkit.heads import build_head
        from gptkit.tasks import get_task

        self.task = get_task(task)
        self.head = build_head(self.task.head, self.backbone.config.n_embd, self.task.n_outputs, head_dropout)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.backbone.lm_logits(self.backbone(idx))

    def _lm_step(self, block: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Pretraining: mean next-token loss over a batch of ``n_ctx + 1`` token blocks."""
        x, y = block[:, :-1], block[:, 1:]
        return lm_loss(self.backbone, self.backbone(x), y), y.numel()

    def _task_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fine-tuning: (total loss, task loss, logits) for a batch of the task batch contract."""
        ids = batch["input_ids"]
        B, K, T = ids.shape
        hidden = self.backbone(ids.view(B * K, T))
        lm = lm_loss(self.backbone, hidden, batch["lm_targets"].view(B * K, T), per_sequence=True)
        pos = batch["extract_pos"].view(B * K)
        extract = hidden[torch.arange(B * K, device=ids.device), pos].view(B, K, -1)
        logits = self.head(extract, batch["choice_mask"])
        task_loss = self.task.loss(logits, batch["labels"])
        lm_coef = self.objective["lm_coef"]
        total = task_loss + lm_coef * lm if lm_coef else task_loss
        return total, task_loss, logits

    # -- Lightning hooks --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.flops_per_token is None:
            self.flops_per_token = measure_flops_per_token(self.backbone.config)

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.backbone.compile()
            self._compiled = True

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if self.task is None:
            loss, n_tokens = self._lm_step(batch)
            logs = {"train/loss": loss}
        else:
            loss, task_loss, _ = self._task_step(batch)
            n_tokens = batch["input_ids"].numel()
            logs = {"train/loss": loss, "train/task_loss": task_loss}
        self.flops_per_batch = self.flops_per_token * n_tokens
        if not torch.isfinite(loss):
            return self._non_finite(loss)
        self.log_dict(logs, prog_bar=True, batch_size=n_tokens)
        return loss

    def _non_finite(self, loss: torch.Tensor) -> None:
        step = self.trainer.global_step
        if self.objective["nonfinite"] == "skip":
            self.print(f"warning: non-finite loss ({loss.item()}) at step {step}; batch skipped")
            return None
        ckpt = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or "(none saved yet)"
        raise NonFiniteLossError(
            f"the loss became {loss.item()} at step {step}. The last checkpoint is {ckpt}; resume from it "
            "with ckpt_path=... and a lower optim.lr or longer warmup, or set objective.nonfinite=skip "
            "to skip such batches"
        )

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.task is None:
            loss, n_tokens = self._lm_step(batch)
            self.val_loss.update(loss, weight=n_tokens)
        else:
            self._task_eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.task is None:
            loss, n_tokens = self._lm_step(batch)
            self.val_loss.update(loss, weight=n_tokens)
        else:
            self._task_eval_step(batch, "test", dataloader_idx)

    def _task_eval_step(self, batch: dict, split: str, dataloader_idx: int) -> None:
        loss, _, logits = self._task_step(batch)
        self.val_loss.update(loss, weight=batch["input_ids"].size(0))
        self.task_metrics_update(split, dataloader_idx, logits, batch)

    def task_metrics_update(self, split: str, dataloader_idx: int, logits: torch.Tensor, batch: dict) -> None:
        """Update the task's torchmetrics for this split (wired by the fine-tuning tasks)."""

    def _log_eval(self, split: str) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        metrics = {f"{split}/loss": loss}
        if self.task is None:
            metrics[f"{split}/ppl"] = torch.exp(loss.clamp(max=50))
        self.log_dict(metrics, prog_bar=True, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def configure_optimizers(self):
        o = self.hparams.optim
        fused = o.get("fused")
        if fused is None:
            fused = self.device.type == "cuda"
        optimizer = make_optimizer(self, o["lr"], o["weight_decay"], o["betas"], o["eps"], fused)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = o["warmup_steps"] if o.get("warmup_ratio") is None else math.ceil(o["warmup_ratio"] * total)
        warmup = max(1, warmup)
        schedule = o["schedule"]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule_factor(step, schedule, warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- initialisation from a pretrained backbone --------------------------------------------------
    def load_pretrained(self, state: dict[str, torch.Tensor], n_transfer: int | None = None) -> list[str]:
        """Copy backbone weights (all, or embeddings + first ``n_transfer`` blocks); returns the keys set."""
        from gptkit.errors import CheckpointError

        if n_transfer is not None and not 0 <= n_transfer <= self.backbone.config.n_layer:
            raise CheckpointError(
                f"init.n_transfer={n_transfer} is outside 0..{self.backbone.config.n_layer} (model.n_layer)"
            )
        own = self.backbone.state_dict()
        keep = {}
        for key, value in state.items():
            if n_transfer is not None and key.startswith("blocks.") and int(key.split(".")[1]) >= n_transfer:
                continue
            if key not in own:
                raise CheckpointError(f"checkpoint tensor '{key}' has no place in this model; check model.n_layer")
            if key == "tokens_embed.weight" and value.shape[0] < own[key].shape[0]:
                grown = own[key].clone()  # new (special-token) rows keep their N(0, 0.02) init
                grown[: value.shape[0]] = value
                value = grown
            if value.shape != own[key].shape:
                raise CheckpointError(
                    f"checkpoint tensor '{key}' has shape {tuple(value.shape)} but the model expects "
                    f"{tuple(own[key].shape)}; the recipe's model sizes must match the checkpoint"
                )
            keep[key] = value
        self.backbone.load_state_dict(keep, strict=False)
        return sorted(keep)


def measure_flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs (forward + backward) per token, counted by Lightning's ``measure_flops``."""
    from lightning_fabric.utilities.throughput import measure_flops

    with torch.device("meta"):
        model = GPT(config)
        x = torch.zeros(1, config.n_ctx, dtype=torch.long)
    flops = measure_flops(model, lambda: lm_loss(model, model(x), x), loss_fn=lambda loss: loss)
    return flops / config.n_ctx
