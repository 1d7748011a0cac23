"""gptkit's throughput and progress callbacks: every batch counted, the clock and the metrics read only
when metrics are logged."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gptkit.callbacks import TokenThroughput
from gptkit.progress import RichProgress


class TinyLM(pl.LightningModule):
    flops_per_batch = 1000.0

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 8)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[:, :-1].float()).pow(2).mean()
        self.log("train/loss", loss)  # as GPTModule does: not prog_bar
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.layer(batch[:, :-1].float()).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_clock_is_read_only_when_logging(tmp_path, monkeypatch):
    readings, updates = [], []
    original = TokenThroughput.read_clock

    def spy(self, trainer):
        readings.append(self.batches)
        return original(self, trainer)

    monkeypatch.setattr(TokenThroughput, "read_clock", spy)
    monitor = TokenThroughput()

    class Logged(pl.loggers.Logger):  # what reaches the loggers, by step
        name, version = "spy", 0

        def log_metrics(self, metrics, step=None):
            updates.append((step, dict(metrics)))

        def log_hyperparams(self, *args, **kwargs):
            pass

    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=40, log_every_n_steps=10, val_check_interval=25,
        limit_val_batches=2, num_sanity_val_steps=1, callbacks=[monitor], default_root_dir=tmp_path,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False, logger=Logged(),
    )
    data = torch.randint(0, 100, (40 * 4, 9))
    trainer.fit(TinyLM(), DataLoader(data, batch_size=4), DataLoader(data[:8], batch_size=4))

    # after the first batch, at every logging step, and before the validation at batch 25
    assert readings == [1, 10, 20, 25, 30, 40]
    rates = {step: m for step, m in updates if "train/device/items_per_sec" in m}
    assert sorted(rates) == [9, 19, 29, 39]  # the steps Lightning logs the updates' own metrics at
    last = rates[39]  # over the last interval: batches 30 to 40, 4 samples of 8 tokens each
    assert last["train/batches"] == 40 and last["train/samples"] == 160 and last["train/lengths"] == 160 * 8
    assert last["train/device/items_per_sec"] == pytest.approx(last["train/device/samples_per_sec"] * 8)
    logged = monitor.latest
    assert logged["train/device/items_per_sec"] > 0 and logged["train/first_update_s"] > 0
    ratio = float(logged["train/device/flops_per_sec"]) / float(logged["train/device/items_per_sec"])
    assert ratio == pytest.approx(1000.0 / (4 * 8))  # FLOPs of the 10 batches since the last reading
    assert [m for _, m in updates if "validate/device/items_per_sec" in m]  # the validation at 25, apart


def test_rich_progress_reads_metrics_only_when_logging(tmp_path, monkeypatch):
    reads = []
    monkeypatch.setattr(RichProgress, "read_metrics", lambda self, trainer, module: reads.append(trainer.global_step) or {})
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=30, log_every_n_steps=10, limit_val_batches=0,
        callbacks=[RichProgress()], default_root_dir=tmp_path, enable_checkpointing=False,
        enable_model_summary=False, logger=False,
    )
    trainer.fit(TinyLM(), DataLoader(torch.randint(0, 100, (30 * 4, 9)), batch_size=4))
    assert reads[:3] == [10, 20, 30] and len(reads) <= 4  # not once per batch (30); then at the epoch end


def test_rich_progress_shows_the_training_loss_without_prog_bar(tmp_path):
    bar = RichProgress()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=5, log_every_n_steps=1, limit_val_batches=0,
        callbacks=[bar], default_root_dir=tmp_path, enable_checkpointing=False,
        enable_model_summary=False, logger=False,
    )
    module = TinyLM()
    trainer.fit(module, DataLoader(torch.randint(0, 100, (5 * 4, 9)), batch_size=4))
    assert "train/loss" not in trainer.progress_bar_metrics
    assert isinstance(bar.get_metrics(trainer, module)["train/loss"], float)


@pytest.mark.parametrize("name,peak", [("NVIDIA H200", 989.4e12), ("NVIDIA H100 80GB HBM3", 989.4e12),
                                       ("NVIDIA H100 PCIe", 756.0e12), ("NVIDIA H100 NVL", 835.5e12),
                                       ("NVIDIA H200 NVL", 835.5e12)])
def test_hopper_peak_is_the_dense_one_and_lightning_does_not_warn(monkeypatch, name, peak):
    """Lightning's table holds no dense Hopper peak (none at all for a plain "NVIDIA H200") and warns
    so; gptkit uses the datasheet's and keeps that misleading warning out of the run's output."""
    import warnings
    from types import SimpleNamespace

    from gptkit.devices import peak_flops

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    cuda = torch.device("cuda")
    assert peak_flops(cuda, torch.bfloat16) == peak
    trainer = SimpleNamespace(precision="bf16-mixed", world_size=1, strategy=SimpleNamespace(root_device=cuda))
    monitor = TokenThroughput()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.setup(trainer, None, "fit")
    assert not [w for w in caught if "FLOPs not found" in str(w.message)]
    assert monitor.available_flops == peak
