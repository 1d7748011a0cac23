"""``GPTModule``: one LightningModule for pretraining and fine-tuning.

Pretraining is this module with no head: the LM loss is the whole objective. Fine-tuning adds a
task head over the hidden state at the ``_classify_`` token and keeps the LM loss on the same
inputs at weight ``lm_coef`` (paper: ``L3 = L2 + lambda * L1``). There is one code path; the head is
the only difference.

The module holds the steps, the losses and the metrics. What keeps a run safe or exact is in
callbacks: a stop on a non-finite loss (:class:`gptkit.reliability.NonFiniteLoss`), the recipe's
settings on resume (:class:`gptkit.resume.ResumedSettings`), tokens/s and FLOPs
(:class:`gptkit.callbacks.TokenThroughput`); starting from pretrained weights is
:func:`gptkit.checkpoint.transfer_backbone`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from gptkit.config import ObjectiveConfig
from gptkit.console import log
from gptkit.errors import GptkitError
from gptkit.fastpath import lm_loss_chunk_rows
from gptkit.model import GPT, GPTConfig, lm_loss
from gptkit.optim import choose_fused, make_optimizer, schedule_factor
from gptkit.tasks.base import TaskSpec


def compile_arguments(mode: str, tuning: bool) -> dict:
    """``torch.compile``'s arguments: its ``mode``; with ``tuning``, that mode's inductor options plus
    coordinate-descent tuning (``torch.compile`` takes a mode or options, not both)."""
    if not tuning:
        return {"mode": mode}
    from torch._inductor import list_mode_options  # (torch.compile's documented way to list a mode's options)

    return {"options": {**list_mode_options(mode), "coordinate_descent_tuning": True}}


class LRSchedule:
    """The multiplier of the peak learning rate after each update: linear warmup, then cosine or linear
    decay to 0, or constant (:func:`gptkit.optim.schedule_factor`).

    Its length is the fit's number of updates, which Lightning knows only once the fit loop has built
    the training data (``trainer.estimated_stepping_batches`` builds it otherwise, and a resumed fit
    would then never get its saved data position back). So the length is taken when the schedule is
    first used after that (``LambdaLR``'s own first call, when it is made, sees one update of warmup:
    the module sets the first update's rate again when training starts).
    """

    def __init__(self, kind: str, warmup_steps: int, warmup_ratio: float | None, trainer: pl.Trainer) -> None:
        self.kind, self.warmup_steps, self.warmup_ratio, self.trainer = kind, warmup_steps, warmup_ratio, trainer
        self.total: int | None = None

    @property
    def warmup(self) -> int:
        ratio = self.warmup_ratio
        return max(1, self.warmup_steps if ratio is None else math.ceil(ratio * (self.total or 0)))

    def __call__(self, step: int) -> float:
        if self.total is None and self.trainer.train_dataloader is not None:
            self.total = int(self.trainer.estimated_stepping_batches)
        if self.total is None:
            return 1.0 / self.warmup  # (the optimizer's rate before training starts: set again then)
        return schedule_factor(step, self.kind, self.warmup, self.total)


class GPTModule(pl.LightningModule):
    """The GPT-1 backbone with the LM objective and, when ``task`` is set, a task head.

    Args:
        model: :class:`~gptkit.model.GPTConfig` fields.
        optim: the recipe's ``optim`` block (lr, weight_decay, betas, eps, schedule, warmup...).
        objective: the recipe's ``objective`` block (``lm_coef``, ``nonfinite``, ``chunked_lm_loss``).
        task: a fine-tuning task (a :class:`~gptkit.tasks.base.TaskSpec`, or a registered task's name),
            or ``None`` for pretraining.
        head_dropout: dropout before the task head (``model.clf_pdrop``).
        tokenizer: ``{"kind", "path", "fingerprint"}`` of the run's tokenizer, recorded in checkpoints.
        compile: ``torch.compile`` the backbone (in ``configure_model``).
        compile_mode: ``torch.compile``'s ``mode`` when compiling (``default``, ``max-autotune``...).
        compile_tuning: add inductor's coordinate-descent tuning of the fused kernels to that mode.
    """

    def __init__(
        self,
        model: dict,
        optim: dict,
        objective: dict | None = None,
        task: str | TaskSpec | None = None,
        head_dropout: float = 0.1,
        tokenizer: dict | None = None,
        compile: bool = False,
        compile_mode: str = "default",
        compile_tuning: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["task"])
        spec = None
        if task is not None:
            from gptkit.tasks import get_task

            spec = task if isinstance(task, TaskSpec) else get_task(task)
        # checkpoints record the task by name, with its transform and labels (checked when evaluated)
        self.hparams["task"] = spec.name if spec is not None else None
        self.hparams["task_info"] = spec.record() if spec is not None else None
        self.backbone = GPT(GPTConfig(**model))
        self.objective = {**asdict(ObjectiveConfig()), **(objective or {})}  # the recipe's defaults
        self.lm_chunk: int | None = None  # rows per chunk of the fused LM loss; set in setup()
        self.task = None
        self.head: nn.Module | None = None
        if spec is not None:
            self._init_task(spec, head_dropout)
        self.val_loss = MeanMetric()
        self.nonfinite_skipped = 0  # batches skipped for a NaN/inf loss (objective.nonfinite=skip)
        self.compiled = False
        self.fused_adamw: bool | None = None  # set in configure_optimizers
        self.lr_schedule: LRSchedule | None = None

    # -- fine-tuning ------------------------------------------------------------------------------
    def _init_task(self, task: TaskSpec, head_dropout: float) -> None:
        from gptkit.heads import build_head

        self.task = task
        cfg = self.backbone.config
        self.head = build_head(self.task.head_kind, cfg.n_embd, self.task.n_outputs, head_dropout, cfg.init_std)
        # One metric set per evaluation dataloader (MNLI validates on matched and mismatched).
        n_val = len(self.task.val_splits)
        n_test = max(n_val, len(self.task.test_splits))
        self.task_metrics = nn.ModuleDict(
            {f"{split}_{i}": self.task.make_metrics() for split, n in (("val", n_val), ("test", n_test))
             for i in range(n)}
        )

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.backbone.lm_logits(self.backbone(idx))

    def _lm_step(self, block: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Pretraining: mean next-token loss over a batch of ``n_ctx + 1`` token blocks."""
        x, y = block[:, :-1], block[:, 1:]
        return lm_loss(self.backbone, self.backbone(x), y, chunk_size=self.lm_chunk), y.numel()

    def _task_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(head logits, last-block hidden states ``[B*K, T, C]``) for a fine-tuning batch."""
        from gptkit.heads import gather_extract

        ids = batch["input_ids"]
        B, K, T = ids.shape
        hidden = self.backbone(ids.view(B * K, T))
        logits = self.head(gather_extract(hidden, batch["extract_pos"]), batch["choice_mask"])
        return logits, hidden

    def _task_step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fine-tuning: (total loss, task loss, logits) for a batch of the task batch contract.

        ``L3 = L2 + lm_coef * L1`` (paper eq. 5). The auxiliary LM loss is the one of
        :func:`gptkit.model.lm_loss` with ``per_sequence=True``: over every real candidate sequence
        (padded candidates of multiple-choice batches are left out), padding masked, mean per
        sequence then over sequences. With ``lm_coef == 0`` it is not computed at all.
        """
        logits, hidden = self._task_logits(batch)
        task_loss = self.task.loss(logits, batch["labels"])
        lm_coef = self.objective["lm_coef"]
        if not lm_coef:
            return task_loss, task_loss, logits
        # Padded candidates get no targets, so they drop out of the per-sequence mean; masking instead
        # of selecting them keeps shapes static (no host sync, no recompilation).
        targets = batch["lm_targets"].masked_fill(~batch["choice_mask"][..., None], -100)
        lm = lm_loss(self.backbone, hidden, targets.flatten(0, 1), per_sequence=True, chunk_size=self.lm_chunk)
        return task_loss + lm_coef * lm, task_loss, logits

    # -- Lightning hooks --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        chunked = self.objective["chunked_lm_loss"]
        self.lm_chunk = lm_loss_chunk_rows(device, self.backbone.config.vocab_size) if chunked is not False else None

    def configure_model(self) -> None:
        if self.hparams.compile and not self.compiled:
            self.backbone.compile(**compile_arguments(self.hparams.compile_mode, self.hparams.compile_tuning))
            self.compiled = True

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor] | None:
        """The update's loss; also its mean over processes (``mean_loss``), which the callbacks read."""
        if self.task is None:
            loss, n_tokens = self._lm_step(batch)
            losses = {"train/loss": loss}
        else:
            loss, task_loss, _ = self._task_step(batch)
            n_tokens = batch["input_ids"].numel()
            losses = {"train/loss": loss, "train/task_loss": task_loss}
        logs = self._mean_over_processes(losses)
        if self.objective["nonfinite"] == "skip" and not bool(torch.isfinite(logs["train/loss"])):
            # a host sync every step: the price of skipping exactly this batch (on every process alike)
            return self._skip(logs["train/loss"], self.trainer.global_step + 1)  # the mean: NaN wherever it arose
        # Not prog_bar: Lightning turns progress-bar values into numbers after every batch, a GPU wait;
        # RichProgress shows them from the callback metrics when it refreshes.
        self.log_dict(logs, batch_size=n_tokens)
        return {"loss": loss, "mean_loss": logs["train/loss"]}

    def _mean_over_processes(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Detached scalars averaged over processes by one ``all_reduce``: the whole global batch's loss,
        as in a single-process run, and NaN/inf on any process makes it non-finite everywhere, so all
        processes stop or skip together. (Not ``sync_dist=True``/``strategy.reduce``: Lightning puts a
        barrier before each all-reduce, and on NCCL a barrier makes the host wait for the GPU.)
        """
        stacked = torch.stack([v.detach().float() for v in values.values()])
        world = self.trainer.world_size
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stacked, op=torch.distributed.ReduceOp.SUM)
            stacked = stacked / world
        elif world > 1:  # a strategy outside torch.distributed
            stacked = self.trainer.strategy.reduce(stacked, reduce_op="mean")
        return dict(zip(values, stacked.unbind()))

    def _skip(self, loss: torch.Tensor, update: int) -> None:
        self.nonfinite_skipped += 1
        log(f"warning: non-finite loss ({loss.item()}) in update {update}; batch skipped "
            f"({self.nonfinite_skipped} so far)")
        return None

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def _eval_step(self, batch: Any, split: str, dataloader_idx: int) -> None:
        """Validation and test: the loss (token-weighted when pretraining) and the task's metrics."""
        if self.task is None:
            loss, n_tokens = self._lm_step(batch)
            self.val_loss.update(loss, weight=n_tokens)
            return
        loss, _, logits = self._task_step(batch)
        self.val_loss.update(loss, weight=batch["input_ids"].size(0))
        self.task_metrics_update(split, dataloader_idx, logits, batch)

    def task_metrics_update(self, split: str, dataloader_idx: int, logits: torch.Tensor, batch: dict) -> None:
        """Update the task's torchmetrics of this split and dataloader."""
        preds = self.task.predict(logits.detach())
        self.task_metrics[f"{split}_{dataloader_idx}"].update(preds, batch["labels"], batch.get("group"))

    def _eval_split_names(self, split: str) -> tuple[str, ...]:
        """The dataset splits behind the ``split`` dataloaders (GLUE ``test`` scores the dev sets)."""
        if split == "val":
            return self.task.val_splits
        names = getattr(self.trainer.datamodule, "test_split_names", None)
        return tuple(names) if names is not None else self.task.test_splits

    def _log_eval(self, split: str) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        metrics = {f"{split}/loss": loss}
        if self.task is None:
            metrics[f"{split}/ppl"] = torch.exp(loss.clamp(max=50))
        else:
            for i, name in enumerate(self._eval_split_names(split)):
                task_metrics = self.task_metrics[f"{split}_{i}"]
                suffix = self.task.metric_suffix(name)
                for key, value in task_metrics.compute().items():
                    metrics[f"{split}/{key}{suffix}"] = value
                task_metrics.reset()
        self.log_dict(metrics, prog_bar=True, sync_dist=False)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Test-set predictions of a fine-tuning task: example ``index`` and predicted ``pred``."""
        if self.task is None:
            raise GptkitError("`gptkit predict` needs a fine-tuning recipe (data.name set to a task)")
        logits, _ = self._task_logits(batch)
        return {"index": batch["index"].cpu(), "pred": self.task.predict(logits).float().cpu()}

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")

    def configure_optimizers(self):
        o = self.hparams.optim
        fused = choose_fused(o.get("fused"), self.device, getattr(self.trainer.precision_plugin, "scaler", None)
                             is not None, bool(self.trainer.gradient_clip_val))
        self.fused_adamw = fused  # (a resumed run's optimizer state brings back the checkpoint's: ResumedSettings)
        optimizer = make_optimizer(self, o["lr"], o["weight_decay"], o["betas"], o["eps"], fused)
        self.lr_schedule = LRSchedule(o["schedule"], o["warmup_steps"], o.get("warmup_ratio"), self.trainer)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: self.lr_schedule(step))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        """The rate of the first update, now that the schedule's length is known (:class:`LRSchedule`)."""
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
            for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * factor

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip as Lightning does, also for fused AdamW under ``bf16-mixed``.

        Lightning's mixed-precision plugin refuses to clip for any optimizer that unscales gradients
        inside its step (fused AdamW), but without a GradScaler nothing is scaled, so clipping before
        the step is exact: torch's own clipping does it then. (With a GradScaler, ``choose_fused`` keeps
        fused AdamW off when clipping.)
        """
        from pytorch_lightning.plugins.precision import MixedPrecision

        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)
