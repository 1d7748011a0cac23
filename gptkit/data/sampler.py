"""Resumable data order: a sampler and a DataLoader whose position inside an epoch is checkpointed.

A run stopped at update k and resumed from its checkpoint must see exactly the batches the
uninterrupted run would have seen from update k + 1 on. That needs three things restored: the
epoch, the seed of that epoch's permutation, and how many samples of the epoch were consumed.

- :class:`ResumableSampler` draws each epoch's order from ``seed + epoch`` with its own generator
  (never the global RNG), splits it between processes like ``DistributedSampler`` (it *is* one, so
  Lightning keeps it instead of injecting its own under DDP), and starts an epoch at ``position``.
- :class:`ResumableDataLoader` counts the batches it hands to the training loop (not the indices
  the sampler has produced, which run ahead when worker processes prefetch) and exposes
  ``state_dict`` / ``load_state_dict``. Lightning saves that state in the fit loop's part of every
  checkpoint and loads it before the first batch of a resumed run.

The state is the same on every process (all ranks consume the same number of batches), so the
checkpoint written by rank 0 restores every rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from gptkit.console import log


class ResumableSampler(DistributedSampler):
    """Seeded, distributed, resumable order over ``range(len(dataset))``.

    Args:
        dataset: anything with ``len()``.
        shuffle: a new permutation each epoch (from ``seed + epoch``); ``False`` keeps index order.
        seed: the data-order seed (the recipe's ``run.seed``).
        num_replicas, rank: the process group (1, 0 for a single process).
        pad: give every rank the same number of samples by repeating the first ones (needed for
            training under DDP, where ranks step together); ``False`` splits exactly, for evaluation.
        drop_last: drop the tail that does not divide evenly between ranks instead of padding.
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.pad = pad
        self.dataset_len = len(dataset)
        if not pad and not drop_last:
            self.num_samples = len(range(rank, self.dataset_len, num_replicas))
            self.total_size = self.dataset_len
        self.position = 0  # samples of this epoch already consumed by this rank

    def order(self) -> list[int]:
        """The whole epoch's order for this rank (before skipping ``position``)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            indices = list(range(self.dataset_len))
        if self.drop_last:
            indices = indices[: self.total_size]
        elif self.pad and self.total_size > len(indices):
            extra = self.total_size - len(indices)
            indices += (indices * math.ceil(extra / max(1, len(indices))))[:extra]
        return indices[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.position :])

    def __len__(self) -> int:
        return self.num_samples  # the whole epoch, also when resuming mid-way (Lightning counts from it)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.position = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "shuffle": self.shuffle,
                "num_replicas": self.num_replicas, "dataset_len": self.dataset_len}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved epoch at the saved position (rescaled if the number of processes changed)."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        position = int(state["position"])
        if state.get("dataset_len", self.dataset_len) != self.dataset_len:
            log(f"warning: the training set has {self.dataset_len:,} examples but the checkpoint's had "
                f"{state['dataset_len']:,}; epoch {self.epoch} restarts from its beginning")
            position = 0
        elif state.get("num_replicas", self.num_replicas) != self.num_replicas:
            # the same global number of samples consumed, shared out anew; exact only when it divides evenly
            position = position * int(state["num_replicas"]) // self.num_replicas
        self.position = position
        if self.position >= self.num_samples:  # saved at the very end of an epoch: start the next one
            self.epoch, self.position = self.epoch + 1, 0


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableSampler` whose epoch and position are checkpointed.

    Lightning treats any train dataloader with ``state_dict`` / ``load_state_dict`` as resumable:
    it stores the state in ``checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]`` and
    restores it before iterating on resume.
    """

    def __init__(self, dataset, sampler: ResumableSampler, **kwargs: Any) -> None:
        if not isinstance(sampler, ResumableSampler):
            raise TypeError("ResumableDataLoader needs a ResumableSampler")
        kwargs.setdefault("generator", torch.Generator().manual_seed(sampler.seed))  # keep global RNG untouched
        super().__init__(dataset, sampler=sampler, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler
        if sampler.position >= len(sampler):  # re-iterated after a finished epoch without set_epoch()
            sampler.set_epoch(sampler.epoch + 1)
        step = self.batch_size or 1
        for batch in super().__iter__():
            # counted when handed out, so a checkpoint written while this batch trains includes it
            sampler.position = min(sampler.position + step, len(sampler))
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
