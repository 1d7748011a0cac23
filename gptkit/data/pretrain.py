"""``PretrainDataModule``: contiguous ``n_ctx``-token blocks from memory-mapped token shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from gptkit.data.sampler import ResumableDataLoader, ResumableSampler
from gptkit.data.shards import ShardSet, build_shards, load_shards
from gptkit.data.sources import Source, describe_empty_rows
from gptkit.errors import DataError


class TokenStream:
    """Several memory-mapped shards seen as one flat token array."""

    def __init__(self, shards: ShardSet) -> None:
        self.arrays = shards.arrays()
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def slice(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.offsets, start, side="right") - 1)
        parts, pos = [], start
        for i in range(first, len(self.arrays)):
            if pos >= stop:
                break
            lo = pos - self.offsets[i]
            hi = min(stop, self.offsets[i + 1]) - self.offsets[i]
            parts.append(self.arrays[i][lo:hi])
            pos = self.offsets[i] + hi
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class BlockDataset(Dataset):
    """Non-overlapping windows of ``n_ctx + 1`` tokens (inputs and shifted targets) in a token range."""

    def __init__(self, stream: TokenStream, start: int, stop: int, n_ctx: int) -> None:
        self.stream, self.start, self.n_ctx = stream, start, n_ctx
        self.n_blocks = max(0, (stop - start - 1) // n_ctx)

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, i: int) -> torch.Tensor:
        lo = self.start + i * self.n_ctx
        return torch.from_numpy(self.stream.slice(lo, lo + self.n_ctx + 1).astype(np.int64))


class PretrainDataModule(pl.LightningDataModule):
    """Serves pretraining blocks; the tail ``val_fraction`` of the token stream is held out.

    ``prepare_data`` tokenises the sources into shards once (or finds them built); ``setup`` maps the
    shards, verifies their checksums and splits train / validation.
    """

    def __init__(
        self,
        sources: list[Source],
        tokenizer,
        shards_dir: str | Path,
        n_ctx: int,
        batch_size: int,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.005,
        num_workers: int = 0,
        pin_memory: bool = False,
        verify_shards: bool = True,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        self.sources, self.tokenizer, self.shards_dir = sources, tokenizer, Path(shards_dir)
        self.n_ctx, self.batch_size = n_ctx, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction, self.num_workers, self.pin_memory = val_fraction, num_workers, pin_memory
        self.verify_shards, self.seed = verify_shards, seed
        self.shards: ShardSet | None = None

    def prepare_data(self) -> None:
        self.shards = build_shards(self.sources, self.tokenizer, self.shards_dir)

    def setup(self, stage: str | None = None) -> None:
        if getattr(self, "train_set", None) is not None:
            return
        if self.shards is None:
            self.prepare_data()
        shards = load_shards(self.shards.root, self.tokenizer.fingerprint, verify=self.verify_shards)
        stream = TokenStream(shards)
        n = len(stream)
        n_val = max(int(n * self.val_fraction), self.n_ctx + 1)
        if n - n_val < self.n_ctx + 1:
            raise DataError(
                f"the corpus has {n:,} tokens, too few to fill one training and one validation block of "
                f"model.n_ctx={self.n_ctx} (needs at least {2 * (self.n_ctx + 1):,}); lower model.n_ctx "
                "or add more text"
            )
        self.train_set = BlockDataset(stream, 0, n - n_val, self.n_ctx)
        self.val_set = BlockDataset(stream, n - n_val, n, self.n_ctx)

    def _replicas(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        # a seeded, resumable order that also splits the blocks between DDP processes
        n, rank = self._replicas()
        sampler = ResumableSampler(self.train_set, shuffle=True, seed=self.seed, num_replicas=n, rank=rank)
        return ResumableDataLoader(
            self.train_set, sampler, batch_size=self.batch_size, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        # each process evaluates its own share exactly once (no padding), the metric sums over processes
        n, rank = self._replicas()
        if len(self.val_set) < n:
            raise DataError(
                f"the validation set has {len(self.val_set)} block(s) of {self.n_ctx} tokens, fewer than the "
                f"{n} processes that each evaluate a share of it; raise data.val_fraction (now "
                f"{self.val_fraction}) or add more text"
            )
        sampler = ResumableSampler(self.val_set, shuffle=False, num_replicas=n, rank=rank, pad=False)
        return DataLoader(self.val_set, batch_size=self.eval_batch_size, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          generator=torch.Generator().manual_seed(self.seed))

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def summary(self) -> str:
        names = [s.path.name for s in self.sources]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        empty = describe_empty_rows(self.shards.meta.get("empty_rows", []))
        return (f"pretraining data: {self.shards.n_tokens:,} tokens from {len(names)} file(s) ({shown}) in "
                f"{len(self.shards.paths)} shard(s) at {self.shards.root}; {len(self.train_set):,} train / "
                f"{len(self.val_set):,} val blocks of {self.n_ctx} tokens" + (f"; {empty}" if empty else ""))
