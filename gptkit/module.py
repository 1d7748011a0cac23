"""``GPTModule``: one LightningModule for pretraining and fine-tuning.

Pretraining is this module with no head: the LM loss is the whole objective. Fine-tuning adds a
task head over the hidden state at the ``_classify_`` token and keeps the LM loss on the same
inputs at weight ``lm_coef`` (paper: ``L3 = L2 + lambda * L1``). There is one code path; the head is
the only difference.
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
from gptkit.model import GPT, GPTConfig, lm_loss, lm_loss_chunk_rows
from gptkit.optim import choose_fused, make_optimizer, schedule_factor
from gptkit.reliability import HostCopy, last_checkpoint_callback


class NonFiniteLossError(GptkitError):
    """The loss became NaN or infinite."""


class FiniteFlag(HostCopy):
    """Whether a loss is finite, brought to the host without waiting (:class:`HostCopy`)."""

    def __init__(self, loss: torch.Tensor) -> None:
        super().__init__(torch.isfinite(loss))
        self.loss = loss


def compile_arguments(mode: str, tuning: bool) -> dict:
    """``torch.compile``'s arguments: its ``mode``; with ``tuning``, that mode's inductor options plus
    coordinate-descent tuning (``torch.compile`` takes a mode or options, not both)."""
    if not tuning:
        return {"mode": mode}
    from torch._inductor import list_mode_options

    return {"options": {**list_mode_options(mode), "coordinate_descent_tuning": True}}


class GPTModule(pl.LightningModule):
    """The GPT-1 backbone with the LM objective and, when ``task`` is set, a task head.

    Args:
        model: :class:`~gptkit.model.GPTConfig` fields.
        optim: the recipe's ``optim`` block (lr, weight_decay, betas, eps, schedule, warmup...).
        objective: the recipe's ``objective`` block (``lm_coef``, ``nonfinite``).
        task: a registered fine-tuning task name, or ``None`` for pretraining.
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
        task: str | None = None,
        head_dropout: float = 0.1,
        tokenizer: dict | None = None,
        compile: bool = False,
        compile_mode: str = "default",
        compile_tuning: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = GPT(GPTConfig(**model))
        self.objective = {**asdict(ObjectiveConfig()), **(objective or {})}  # the recipe's defaults
        self.lm_chunk: int | None = None  # rows per chunk of the fused LM loss; set in setup()
        self.task = None
        self.head: nn.Module | None = None
        if task is not None:
            self._init_task(task, head_dropout)
        self.val_loss = MeanMetric()
        self.flops_per_token: float | None = None
        self.flops_per_batch: float | None = None
        self.nonfinite_skipped = 0  # batches skipped for a NaN/inf loss (objective.nonfinite=skip)
        # the update and hyper-parameters of the checkpoint a fit resumes (on_load_checkpoint), else None
        self.resumed_from: dict | None = None

    # -- fine-tuning ------------------------------------------------------------------------------
    def _init_task(self, task: str, head_dropout: float) -> None:
        from gptkit.heads import build_head
        from gptkit.tasks import get_task

        self.task = get_task(task)
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
        if self.flops_per_token is None:
            self.flops_per_token = measure_flops_per_token(self.backbone.config)

    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.backbone.compile(**compile_arguments(self.hparams.compile_mode, self.hparams.compile_tuning))
            self._compiled = True

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if self.task is None:
            loss, n_tokens = self._lm_step(batch)
            losses = {"train/loss": loss}
        else:
            loss, task_loss, _ = self._task_step(batch)
            n_tokens = batch["input_ids"].numel()
            losses = {"train/loss": loss, "train/task_loss": task_loss}
        self.flops_per_batch = self.flops_per_token * n_tokens
        logs = self._mean_over_processes(losses)
        update = self.trainer.global_step + 1
        if self.objective["nonfinite"] == "skip":
            # a host sync every step: the price of skipping exactly this batch (on every process alike)
            if not bool(torch.isfinite(logs["train/loss"])):
                return self._skip(logs["train/loss"], update)  # the mean: NaN wherever it arose
        else:
            self.raise_if_nonfinite()
            self._pending_loss = (FiniteFlag(logs["train/loss"]), update)
        # Not prog_bar: Lightning turns progress-bar values into numbers after every batch, a GPU wait;
        # RichProgress shows them from the callback metrics when it refreshes.
        self.log_dict(logs, batch_size=n_tokens)
        return loss

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

    def raise_if_nonfinite(self) -> None:
        """Stop on a NaN/inf loss of the *previous* update (objective.nonfinite=stop).

        The previous update's flag was copied to the host without waiting (:class:`FiniteFlag`), so
        the host keeps running ahead of the device; the pending flag is also checked before any
        checkpoint is written, so a checkpoint never holds weights updated from a non-finite loss.
        """
        pending, self._pending_loss = getattr(self, "_pending_loss", None), None
        if pending is None or pending[0]:
            return
        loss, update = pending[0].loss, pending[1]
        ckpt = getattr(last_checkpoint_callback(self.trainer), "last_model_path", "") or ""
        advice = "a lower optim.lr or longer optim.warmup_steps"
        where = (f"The last checkpoint is {ckpt}; resume from it with ckpt_path=last and {advice}" if ckpt
                 else f"No checkpoint was saved before it; start again with {advice}")
        raise NonFiniteLossError(f"the loss became {loss.item()} in update {update}. {where}, or set "
                                 "objective.nonfinite=skip to skip such batches")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.raise_if_nonfinite()

    def on_train_end(self) -> None:
        self.raise_if_nonfinite()

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
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if split == "val":
            return self.task.val_splits
        names = getattr(dm, "test_split_names", None)
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
        self._fused = fused  # (a resumed run's optimizer state brings back the checkpoint's: on_train_start)
        optimizer = make_optimizer(self, o["lr"], o["weight_decay"], o["betas"], o["eps"], fused)
        total = int(self.trainer.estimated_stepping_batches)
        # Estimating from epochs makes Lightning build the train loader now, before a resumed run's
        # checkpoint is restored; it would then never load the saved data position into it (the run
        # would restart its epoch's order). Dropping it makes the fit loop build it again, restored.
        self.trainer.fit_loop._combined_loader = None
        warmup = o["warmup_steps"] if o.get("warmup_ratio") is None else math.ceil(o["warmup_ratio"] * total)
        warmup = max(1, warmup)
        schedule = o["schedule"]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: schedule_factor(step, schedule, warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_from = {"step": int(checkpoint.get("global_step", 0)),
                             "hparams": checkpoint.get("hyper_parameters") or {}}

    def resumed_changes(self) -> list[str]:
        """The training settings that differ between this run and the checkpoint it resumes (``optim.*``,
        ``objective.*``, the dropouts), as ``key=this run's (the checkpoint's: its)``."""
        def settings(hp) -> dict:
            model = hp.get("model") or {}
            return {**{f"{section}.{k}": v for section in ("optim", "objective") for k, v in (hp.get(section) or {}).items()},
                    **{f"model.{k}": model[k] for k in ("embd_pdrop", "attn_pdrop", "resid_pdrop") if k in model},
                    **({"model.clf_pdrop": hp["head_dropout"]} if hp.get("task") and "head_dropout" in hp else {})}

        mine, theirs = settings(self.hparams), settings(self.resumed_from["hparams"])
        return [f"{k}={v} (the checkpoint's: {theirs[k]})" for k, v in mine.items() if k in theirs and theirs[k] != v]

    def on_train_start(self) -> None:
        """A resumed fit trains with the recipe's settings, and says which differ from the checkpoint's.

        Lightning restores the checkpoint's optimizer (its lr, betas, eps, weight decay, fused) and the
        schedule's peak lr over the ones this run was configured with; they are set back here, so that
        resuming with, say, a lower ``optim.lr`` (the advice after a non-finite loss) takes effect. The
        schedule's shape (``schedule``, warmup, ``trainer.max_steps``) is the recipe's already; where the
        rate at this update differs from the checkpoint's, it is set and the jump logged.
        """
        scheduler = self.lr_schedulers()
        if self.resumed_from is None or not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        optimizer, o = self.trainer.optimizers[0], self.hparams.optim
        group = optimizer.param_groups[0]  # the decayed weights (gptkit.optim.param_groups)
        if changed := self.resumed_changes():
            log("resuming with " + ", ".join(changed))
        step = scheduler.last_epoch
        rate = o["lr"] * scheduler.lr_lambdas[0](step)
        if not math.isclose(group["lr"], rate, rel_tol=1e-6, abs_tol=1e-12):
            log(f"resuming at update {step}: the learning rate goes from {group['lr']:.3g} (the checkpoint's) to "
                f"{rate:.3g} (the recipe's schedule: optim.lr, the schedule, the warmup or the number of updates changed)")
        scheduler.base_lrs = [o["lr"]] * len(optimizer.param_groups)
        # Through state_dict / load_state_dict, so that torch places AdamW's step counters for the
        # fused setting the groups now have (the device differs between fused and not).
        state = optimizer.state_dict()
        for i, g in enumerate(state["param_groups"]):
            g.update(lr=rate, initial_lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                     fused=True if self._fused else None)
            if i == 0:
                g["weight_decay"] = o["weight_decay"]
        optimizer.load_state_dict(state)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip as Lightning does, also for fused AdamW under ``bf16-mixed``.

        Lightning's mixed-precision plugin refuses to clip for any optimizer that unscales gradients
        inside its step (fused AdamW), but without a GradScaler nothing is scaled, so clipping before
        the step is exact. (With a GradScaler, ``choose_fused`` keeps fused AdamW off when clipping.)
        """
        from pytorch_lightning.plugins.precision import MixedPrecision, Precision
        from pytorch_lightning.utilities import GradClipAlgorithmType

        plugin = self.trainer.precision_plugin
        if gradient_clip_val and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            algorithm = GradClipAlgorithmType(gradient_clip_algorithm or GradClipAlgorithmType.NORM)
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, algorithm)  # without the refusal
            return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    # -- initialisation from a pretrained backbone --------------------------------------------------
    def load_pretrained(self, state: dict[str, torch.Tensor], n_transfer: int | None = None) -> list[str]:
        """Copy backbone weights (all, or embeddings + first ``n_transfer`` blocks); returns the keys set."""
        from gptkit.errors import CheckpointError

        if n_transfer is not None and not 0 <= n_transfer <= self.backbone.config.n_layer:
            raise CheckpointError(
                f"init.n_transfer={n_transfer} is outside 0..{self.backbone.config.n_layer} (model.n_layer)"
            )
        def transferred(key: str) -> bool:  # embeddings, and the first n_transfer blocks (all when unset)
            return n_transfer is None or not key.startswith("blocks.") or int(key.split(".")[1]) < n_transfer

        own = self.backbone.state_dict()
        keep = {}
        for key, value in state.items():
            if not transferred(key):
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
        missing = [k for k in own if transferred(k) and k not in keep]
        if missing:  # they would silently keep their random initialisation
            raise CheckpointError(
                f"the checkpoint lacks {len(missing)} backbone tensor(s) that it should transfer ({', '.join(missing[:3])}"
                f"{' ...' if len(missing) > 3 else ''}); it is incomplete or from another model"
            )
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
