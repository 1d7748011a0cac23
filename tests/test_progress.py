"""What gptkit shows a person: a fit's rich display (updates against the run's length, a line per
validation, nothing from the sanity check, the last frame once), its plain lines, Lightning's lines left
out, the start-up notes said once, the closing ``done:`` line, and generated text as prose."""

from __future__ import annotations

import io
import logging
import re
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import NEWS, QUICK
from pytorch_lightning.callbacks import ProgressBar
from rich.console import Console
from torch.utils.data import DataLoader

from gptkit.callbacks import FitSummary
from gptkit.console import duration, log, log_mark, quiet_libraries, unrepeated
from gptkit.generate import detokenize
from gptkit.progress import PlainProgress, RichProgress


class TinyLM(pl.LightningModule):
    """Logs as GPTModule does: the training loss without ``prog_bar``, the validation's with it."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 8)

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[:, :-1].float()).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.layer(batch[:, :-1].float()).pow(2).mean()
        self.log_dict({"val/loss": loss, "val/ppl": loss.exp()}, prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.001)


def tiny_fit(tmp_path, callbacks, batches: int = 60, **trainer_kwargs) -> pl.Trainer:
    """A fit of :class:`TinyLM` with a logger (Lightning's bar showed its ``v_num``) and a 2-batch sanity check."""
    kwargs = {"max_steps": 60, "val_check_interval": 20, "check_val_every_n_epoch": None, "log_every_n_steps": 10,
              **trainer_kwargs}
    trainer = pl.Trainer(accelerator="cpu", devices=1, num_sanity_val_steps=2, limit_val_batches=3,
                         callbacks=callbacks, logger=pl.loggers.CSVLogger(tmp_path), default_root_dir=tmp_path,
                         enable_checkpointing=False, enable_model_summary=False, **kwargs)
    data = torch.randint(0, 3, (batches * 4, 9))
    trainer.fit(TinyLM(), DataLoader(data, batch_size=4), DataLoader(data[:12], batch_size=4))
    return trainer


def rich_fit(tmp_path, terminal: bool = False, **kwargs) -> str:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=terminal, color_system=None)
    tiny_fit(tmp_path, [RichProgress(console=console)], **kwargs)
    return out.getvalue()


def test_rich_display_counts_updates_keeps_a_line_per_validation_and_the_last_frame_once(tmp_path):
    out = rich_fit(tmp_path)  # not a terminal: the lines above the bar, then its last frame
    lines = out.splitlines()
    validations = [line for line in lines if line.startswith("validation at ")]
    assert [line.split(":")[0] for line in validations] == [f"validation at update {n}/60" for n in (20, 40, 60)]
    assert all(re.search(r"val/loss [\d.]+  val/ppl [\d.]+  \([\d.ms]+\)$", line) for line in validations)
    assert out.count("60/60 updates") == 1 and lines[-1].startswith("train ")  # the last frame, once, last
    assert re.search(r"train/loss [\d.]+", lines[-1])
    assert "Epoch" not in out and "v_num" not in out


def test_rich_display_shows_nothing_of_the_sanity_check(tmp_path, monkeypatch):
    shown = []  # what the bar had read each time it drew the training bar
    original = RichProgress.on_train_batch_end

    def spy(self, trainer, *args):
        original(self, trainer, *args)
        shown.append((trainer.global_step, dict(self.shown)))

    monkeypatch.setattr(RichProgress, "on_train_batch_end", spy)
    out = rich_fit(tmp_path, terminal=True)  # every frame drawn, as a terminal gets them
    before_first_validation = out.split("validation at update 20/60")[0]
    assert "val/" not in before_first_validation
    assert not [step for step, metrics in shown if step <= 20 and any(k.startswith("val/") for k in metrics)]
    assert any(k.startswith("val/") for k in shown[-1][1])  # after a real validation, its values are read


def test_rich_display_names_the_epoch_where_epochs_end_the_run(tmp_path):
    out = rich_fit(tmp_path, batches=10, max_steps=-1, max_epochs=2, val_check_interval=None,
                   check_val_every_n_epoch=1)
    assert "validation at update 10/20 (epoch 1/2): val/loss" in out
    assert "validation at update 20/20 (epoch 2/2): val/loss" in out
    assert out.splitlines()[-1].startswith("epoch 2/2 ") and "20/20 updates" in out


def test_rich_progress_is_the_trainers_progress_bar(tmp_path):
    """A Lightning ProgressBar: the Trainer takes it as the run's bar (and adds no bar of its own)."""
    bar = RichProgress(console=Console(file=io.StringIO()))
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[bar], logger=False, enable_checkpointing=False,
                         default_root_dir=tmp_path, enable_model_summary=False)
    assert trainer.progress_bar_callback is bar
    assert [cb for cb in trainer.callbacks if isinstance(cb, ProgressBar)] == [bar]


def test_plain_progress_keeps_its_lines_and_prints_no_sanity_check_values(tmp_path):
    stream = io.StringIO()
    tiny_fit(tmp_path, [PlainProgress(every=10, stream=stream)], enable_progress_bar=False)
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("validation")] == [
        f"validation at step {n}" for n in (20, 40, 60)]
    assert [line.split()[1] for line in lines if line.startswith("step ")] == [f"{n}/60" for n in range(10, 70, 10)]
    assert "val/" not in "".join(lines[: lines.index(next(x for x in lines if x.startswith("validation")))])


def test_lightnings_device_stop_and_checkpoint_lines_are_left_out(tmp_path):
    quiet_libraries()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    lightning = logging.getLogger("pytorch_lightning")
    lightning.addHandler(handler)
    try:
        trainer = tiny_fit(tmp_path, [], batches=4, max_steps=4, enable_progress_bar=False)
        trainer.save_checkpoint(tmp_path / "x.ckpt")
        from pytorch_lightning.utilities.rank_zero import rank_zero_info

        rank_zero_info("a line gptkit does not know")
    finally:
        lightning.removeHandler(handler)
    said = [r.getMessage() for r in records]
    assert said == ["a line gptkit does not know"], said  # the filter drops those lines, not everything


def test_a_note_said_while_preparing_the_data_is_not_repeated_in_the_summary(capsys):
    note = "36 row(s) with an empty text field skipped (a.csv: 36 of 3,824 (1%), first at a.csv:23)"
    trainer = SimpleNamespace(datamodule=SimpleNamespace(summary=lambda: f"pretraining data: 3 tokens; {note}"))
    module = torch.nn.Linear(2, 2)
    FitSummary("runs/x").on_fit_start(trainer, module)  # a run whose shards were already there: said once
    first = capsys.readouterr().err
    assert first.count(note) == 1
    fit = FitSummary("runs/x")
    log(note)  # the shards are built during this fit and say it
    fit.on_fit_start(trainer, module)
    second = capsys.readouterr().err
    assert second.count(note) == 1 and "[gptkit] pretraining data: 3 tokens\n" in second
    assert unrepeated(f"a; {note}", log_mark()) == f"a; {note}"  # (nothing said since the mark)


@pytest.mark.parametrize("seconds,text", [(4.23, "4.2s"), (45, "45s"), (72.4, "1m12s"), (3725, "1h02m")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert duration(seconds) == text


def test_the_done_line_gives_the_updates_the_time_and_the_best_and_final_metric(tmp_path, capsys):
    from gptkit.builder import build
    from gptkit.config import load_config
    from gptkit.verbs import fit

    text = tmp_path / "news.txt"
    text.write_text(NEWS.read_text()[:40000])
    cfg = load_config(QUICK, [
        "data.corpus=null", f"data.files=[{text}]", "model.n_layer=1", "model.n_head=2", "model.n_embd=16",
        "model.n_ctx=32", "tokenizer.vocab_size=300", "data.batch_size=8", "data.val_fraction=0.1",
        "trainer.max_steps=12", "trainer.val_check_interval=4", "trainer.log_every_n_steps=4",
        "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "trainer.devices=1", "optim.lr=1e-2",
        "optim.warmup_steps=2", "logging.progress=plain", f"run.dir={tmp_path / 'runs'}",
        f"run.data_dir={tmp_path / 'data'}",
    ])
    fit(build(cfg))
    err = capsys.readouterr().err
    losses = {int(step): float(loss) for step, loss in re.findall(r"validation at step (\d+): val/loss ([\d.]+)", err)}
    assert sorted(losses) == [4, 8, 12]
    done = re.search(r"done: 12 updates in [\d.ms]+; best val/loss ([\d.]+) \(update (\d+)\), final ([\d.]+); "
                     r"last checkpoint \S+last\.ckpt, best \S+best-step(\d+)-\S+\.ckpt", err)
    assert done, err[-2000:]
    best_step = min(losses, key=losses.get)
    assert float(done[1]) == pytest.approx(losses[best_step], abs=1e-3) and int(done[2]) == int(done[4]) == best_step
    assert float(done[3]) == pytest.approx(losses[12], abs=1e-3)
    assert "GPU available" not in err and "`Trainer.fit` stopped" not in err


@pytest.mark.parametrize("decoded,prose", [
    # gptkit's trained BPE splits at every punctuation character
    ('trump \' s plan , he said . " it \' s 3 . 5 % of u . s . well - known firms . "',
     'trump\'s plan, he said. "it\'s 3.5% of u.s. well-known firms."'),
    ("we don \' t know , they \' re sure", "we don\'t know, they\'re sure"),
    # the released tokenizer splits as spaCy does
    ("do n\'t , trump \'s", "don\'t, trump\'s"),
    # quotes: paired in order; a first one after a full stop on a line with an odd number closes one
    ('the president said . " we are', 'the president said." we are'),
    ('he said , " we will go', 'he said, "we will go'),
    ('" yes , " she said . " no . "', '"yes," she said. "no."'),
    ("( 1 , 000 ) $ 5 # 1 at 10 : 30 wait . . . what ?", "(1,000) $5 #1 at 10:30 wait... what?"),
    ("line one \n line two !", "line one\nline two!"),
    ("the players \' union", "the players \' union"),  # a quote or a plural possessive: left as it is
    ("", ""),
])
def test_generated_text_reads_as_prose(decoded, prose):
    assert detokenize(decoded) == prose
