"""The fine-tuning DataModule: one class for every task in :mod:`gptkit.tasks`.

It reads the task's official files, applies the paper's input transform, and serves batches in the
layout of :func:`gptkit.tasks.base.collate`. Everything left out on the way is counted and shown by
:meth:`FinetuneDataModule.summary`: malformed rows skipped (``skip_bad_rows``), rows the dataset's
own rule excludes (SNLI gold label ``-``, polarity score 0), and examples truncated to ``n_ctx``.

Splits per stage: ``fit`` trains on ``train`` and validates on the task's dev set(s) (MNLI: matched
and mismatched, two dataloaders); ``test`` scores the test set(s) when they carry labels, and the dev
set(s) otherwise (GLUE and SuperGLUE keep test labels private); ``predict`` runs on the test set(s),
labelled or not, for prediction files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from gptkit import console
from gptkit.data.cache import resolve_data_dir
from gptkit.data.sampler import ResumableDataLoader, ResumableSampler
from gptkit.errors import ConfigError, DataError
from gptkit.tasks import get_task
from gptkit.tasks.base import Encoded, Example, ReadStats, TaskSpec, collate, encode

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    name: str
    examples: list[Encoded]
    stats: ReadStats
    drawn: str = ""  # train with data.train_examples: "8,454 read; 100 drawn with seed 1 (data.train_examples)"

    @property
    def truncated(self) -> int:
        return sum(e.truncated for e in self.examples)

    @property
    def labelled(self) -> bool:
        return any(e.label is not None for e in self.examples)

    def describe(self, n_ctx: int) -> str:
        text = self.stats.describe() + (f"; {self.drawn}" if self.drawn else "")
        return f"{text}, {self.truncated} truncated to n_ctx={n_ctx}"


def subsample_indices(n: int, k: int | None, seed: int) -> list[int]:
    """The training examples ``data.train_examples=k`` keeps out of ``n``: the first ``k`` of a permutation
    drawn with ``seed`` (``run.seed``), in file order. The same seed gives the same examples to every run
    of any recipe over the same split, and a smaller ``k`` keeps a subset of a larger one's examples.
    ``k=None`` keeps all. Raises DataError when ``k > n``."""
    if k is None:
        return list(range(n))
    if k > n:
        raise DataError(f"data.train_examples={k} is more than the {n} training examples; lower it, or set "
                        "data.train_examples=null to train on all of them")
    import numpy as np

    return sorted(np.random.RandomState(seed).permutation(n)[:k].tolist())


class LengthGroupedSampler(ResumableSampler):
    """Random training batches of examples of similar length, to waste less compute on padding.

    Each epoch: shuffle all examples, cut them into chunks of ``chunk_batches`` global batches (one
    batch per process), sort each chunk by length, cut it into global batches, shuffle those, and
    give each process every ``num_replicas``-th example of each global batch. With the DataLoader's
    ``batch_size`` equal to ``batch_size``, each process's batch ``i`` is its share of global batch
    ``i``. Every example is seen once per epoch (under DDP the last global batch is padded by
    repeating the first examples, so every process takes the same number of batches); the order
    depends only on ``seed`` and the epoch. Like its base :class:`ResumableSampler` it is a
    ``DistributedSampler`` (Lightning keeps it under DDP) and resumes mid-epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, chunk_batches: int = 50,
                 num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(lengths, shuffle=True, seed=seed, num_replicas=num_replicas, rank=rank)
        self.lengths = lengths
        self.batch_size = batch_size
        self.global_batch = batch_size * num_replicas
        self.chunk = self.global_batch * chunk_batches

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """As :class:`ResumableSampler`, but the grouped order depends on the global batch: with another
        number of processes or batch size the saved epoch restarts from its beginning (with a warning)."""
        same = (state.get("num_replicas", self.num_replicas) == self.num_replicas
                and state.get("batch_size", self.batch_size) == self.batch_size)
        super().load_state_dict(state)
        if not same and self.position:
            console.log(f"warning: data.group_by_length: the number of processes or data.batch_size changed since "
                        f"the checkpoint, so epoch {self.epoch} restarts from its beginning")
            self.position = 0

    def order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        batches = []
        for start in range(0, len(order), self.chunk):
            chunk = sorted(order[start : start + self.chunk], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.global_batch] for i in range(0, len(chunk), self.global_batch)]
        batches = [batches[b] for b in torch.randperm(len(batches), generator=g).tolist()]
        last = next((b for b in batches if len(b) < self.global_batch), None)
        if last is not None:  # a short global batch goes last, padded to a multiple of num_replicas
            batches.remove(last)
            missing = -len(last) % self.num_replicas
            pool = [i for b in batches + [last] for i in b]
            batches.append(last + (pool * missing)[:missing])  # repeats, even if there are fewer examples
        return [i for b in batches for i in b[self.rank :: self.num_replicas]]


class FinetuneDataModule(pl.LightningDataModule):
    """Batches of one fine-tuning task (see :func:`gptkit.tasks.base.collate` for their layout).

    ``root`` is the folder the user downloaded (e.g. ``~/data/glue_data`` or ``~/data/RACE``);
    for a task with a catalogue corpus (polarity) it may be unset, and the corpus is fetched into
    ``data_dir`` (``None``: the per-user cache, :func:`gptkit.data.cache.resolve_data_dir`);
    ``subset`` selects part of a dataset (RACE: ``all``, ``middle``, ``high``); ``seed`` fixes the
    order of training batches. ``group_by_length`` batches examples of similar length together
    (:class:`LengthGroupedSampler`; less padding, faster on CPUs; off by default, as the paper
    draws plain random batches). ``pin_memory`` puts batches in page-locked memory, so that copying
    them to a GPU does not make the host wait.
    """

    def __init__(
        self,
        task_name: str | TaskSpec,
        root: str | Path,
        tokenizer: Any,
        n_ctx: int,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        skip_bad_rows: bool = False,
        subset: str | None = None,
        seed: int = 0,
        data_dir: str | Path | None = None,
        group_by_length: bool = False,
        pin_memory: bool = False,
        train_examples: int | None = None,
    ) -> None:
        super().__init__()
        self.task = task_name if isinstance(task_name, TaskSpec) else get_task(task_name)
        if not self.task.needs_root:  # a table task names its files; data.root is only where relative ones start
            root = root or "."
        if root is None or str(root).strip() == "":
            if self.task.corpus is None:
                raise ConfigError(f"data.root is not set: point it at the {self.task.title} files you downloaded")
            root = None  # fetched from the corpus catalogue in prepare_data
        self.root = Path(str(root)).expanduser() if root is not None else None
        self.data_dir = resolve_data_dir(data_dir)
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.skip_bad_rows = skip_bad_rows
        self.subset = self.task.check_subset(subset)
        self.seed = seed
        self.group_by_length = group_by_length
        self.pin_memory = pin_memory
        self.train_examples = train_examples
        self.splits: dict[str, SplitData] = {}
        self._collate = partial(collate, regression=self.task.regression)

    # -- loading -----------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fetch the task's corpus (movie-review polarity) when ``root`` is not given."""
        if self.root is None:
            from gptkit.data.corpora import fetch

            self.root = fetch(self.task.corpus, self.data_dir)

    def examples(self, split: str) -> tuple[list[Example], ReadStats]:
        """The examples of ``split`` as text (before the input transform), and what reading them skipped;
        the corpus is fetched first when the task has one and ``root`` is unset."""
        if self.root is None:
            self.prepare_data()
        return self.task.load(self.root, split, self.skip_bad_rows, self.subset)

    def _load(self, split: str) -> SplitData:
        if split not in self.splits:
            examples, stats = self.examples(split)
            drawn = ""
            if split == "train" and self.train_examples is not None:  # a seeded subsample (docs/study.md)
                try:
                    examples = [examples[i] for i in subsample_indices(len(examples), self.train_examples, self.seed)]
                except DataError as exc:
                    raise DataError(f"{self.task.title}: {exc}") from None
                drawn = f"{len(examples)} drawn with seed {self.seed} (data.train_examples)"
            encoded = encode(examples, self.task.transform, self.tokenizer, self.n_ctx)
            data = SplitData(split, encoded, stats, drawn)
            self.splits[split] = data
            log.info("%s %s: %s", self.task.name, split, data.describe(self.n_ctx))
        return self.splits[split]

    @property
    def test_split_names(self) -> tuple[str, ...]:
        """The splits ``gptkit test`` scores: the test set(s) if labelled, else the dev set(s)."""
        tests = [self._load(s) for s in self.task.test_splits]
        if all(t.labelled for t in tests):
            return self.task.test_splits
        return self.task.val_splits

    @property
    def predict_split_names(self) -> tuple[str, ...]:
        return self.task.test_splits

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._load("train")
        if stage in (None, "fit", "validate"):
            for split in self.task.val_splits:
                self._load(split)
        if stage in (None, "test"):
            if self.test_split_names != self.task.test_splits:
                console.log(
                    f"{self.task.title} test files carry no labels: `test` scores the dev set "
                    f"({', '.join(self.task.val_splits)}) instead; `predict` writes test-set predictions"
                )
            for split in self.test_split_names:
                self._load(split)
        if stage in (None, "predict"):
            for split in self.task.test_splits:
                self._load(split)
        if stage in ("validate", "test", "predict"):
            console.log(self.summary())  # `fit` prints it through the builder

    # -- dataloaders -------------------------------------------------------------------------------
    def _loader(self, split: str, train: bool = False) -> DataLoader:
        """Training: a seeded order that resumes mid-epoch and splits the examples between DDP
        processes (:mod:`gptkit.data.sampler`). Evaluation: every example exactly once per process
        group, no padding."""
        data = self._load(split).examples
        trainer = self.trainer
        n, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        common = {"collate_fn": self._collate, "num_workers": self.num_workers, "pin_memory": self.pin_memory,
                  "persistent_workers": self.num_workers > 0}
        if train:
            if self.group_by_length:
                lengths = [max(len(s) for s in e.sequences) for e in data]
                sampler = LengthGroupedSampler(lengths, self.batch_size, self.seed, num_replicas=n, rank=rank)
            else:
                sampler = ResumableSampler(data, shuffle=True, seed=self.seed, num_replicas=n, rank=rank)
            return ResumableDataLoader(data, sampler, batch_size=self.batch_size, **common)
        if len(data) < n:
            raise DataError(f"the {split} split of {self.task.title} has {len(data)} example(s), fewer than the "
                            f"{n} processes that each evaluate a share of it; run it with fewer processes")
        sampler = ResumableSampler(data, shuffle=False, num_replicas=n, rank=rank, pad=False)
        return DataLoader(data, batch_size=self.eval_batch_size, sampler=sampler,  # type: ignore[arg-type]
                          generator=torch.Generator().manual_seed(self.seed), **common)

    def _loaders(self, splits: tuple[str, ...]) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(s) for s in splits]
        return loaders[0] if len(loaders) == 1 else loaders

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loaders(self.task.val_splits)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loaders(self.test_split_names)

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loaders(self.task.test_splits)

    # -- reporting ---------------------------------------------------------------------------------
    def summary(self) -> str:
        """One line per loaded split: examples, skipped and excluded rows, truncated examples."""
        source = f"data from {self.root}" if self.task.needs_root else f"root {self.root.resolve()}"
        lines = [f"task {self.task.name} ({self.task.title}), {source}"]
        if self.subset:
            lines[0] += f", subset {self.subset}"
        for name, data in self.splits.items():
            lines.append(f"  {name}: {data.describe(self.n_ctx)}")
        return "\n".join(lines)
