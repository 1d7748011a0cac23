"""Task heads: tiny modules over the backbone's final hidden state at the ``_classify_`` token.

Every head takes ``extract`` ``[B, K, C]`` (the extract state of each of an example's ``K``
sequences) and ``choice_mask`` ``[B, K]`` and returns logits:

* :class:`ClassificationHead` (classification and entailment, ``K = 1``): ``[B, n_outputs]``.
* :class:`SimilarityHead` (``K = 2``, both orderings): the two extract states are added
  element-wise, then a linear layer: ``[B, n_outputs]``. Regression (STS-B) is this head with
  ``n_outputs = 1``, because the paper treats STS-B as a similarity task; the loss is MSE.
* :class:`MultipleChoiceHead` (``K`` candidates, any number): one score per candidate, ``[B, K]``;
  padded candidates (``choice_mask`` False) score ``-inf`` so a softmax over candidates ignores them.

Classifier dropout (0.1 in the paper) comes before the linear layer. For multiple choice one
dropout mask is shared by all candidates of an example, as in the released code, so candidates
are compared on the same features. Linear weights are N(0, 0.02), biases 0.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_KINDS = ("classification", "entailment", "similarity", "multiple_choice")


def _linear(n_in: int, n_out: int, init_std: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.normal_(layer.weight, std=init_std)
    nn.init.zeros_(layer.bias)
    return layer


class ClassificationHead(nn.Module):
    """Dropout, then a linear layer on the single extract state."""

    def __init__(self, n_embd: int, n_outputs: int, dropout: float = 0.1, init_std: float = 0.02) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = _linear(n_embd, n_outputs, init_std)

    def forward(self, extract: torch.Tensor, choice_mask: torch.Tensor | None = None) -> torch.Tensor:
        if extract.size(1) != 1:
            raise ValueError(f"a classification head expects one sequence per example, got {extract.size(1)}")
        return self.linear(self.dropout(extract[:, 0]))


class SimilarityHead(nn.Module):
    """Sum of the extract states of both orderings, dropout, then a linear layer."""

    def __init__(self, n_embd: int, n_outputs: int, dropout: float = 0.1, init_std: float = 0.02) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = _linear(n_embd, n_outputs, init_std)

    def forward(self, extract: torch.Tensor, choice_mask: torch.Tensor | None = None) -> torch.Tensor:
        if extract.size(1) != 2:
            raise ValueError(f"a similarity head expects two sequences (both orderings), got {extract.size(1)}")
        return self.linear(self.dropout(extract.sum(dim=1)))


class MultipleChoiceHead(nn.Module):
    """A linear score per candidate; one dropout mask shared across an example's candidates."""

    def __init__(self, n_embd: int, n_outputs: int = 1, dropout: float = 0.1, init_std: float = 0.02) -> None:
        super().__init__()
        if n_outputs != 1:
            raise ValueError("a multiple-choice head scores each candidate with one output (n_outputs=1)")
        self.p = dropout
        self.linear = _linear(n_embd, 1, init_std)

    def forward(self, extract: torch.Tensor, choice_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.training and self.p > 0:
            B, _, C = extract.shape
            keep = torch.empty(B, 1, C, device=extract.device, dtype=extract.dtype).bernoulli_(1 - self.p)
            extract = extract * keep / (1 - self.p)
        scores = self.linear(extract).squeeze(-1)
        if choice_mask is not None:
            scores = scores.masked_fill(~choice_mask, float("-inf"))
        return scores


def build_head(kind: str, n_embd: int, n_outputs: int, dropout: float = 0.1, init_std: float = 0.02) -> nn.Module:
    """The head for a task's input transform (``entailment`` is a classification head)."""
    if kind in ("classification", "entailment"):
        return ClassificationHead(n_embd, n_outputs, dropout, init_std)
    if kind == "similarity":
        return SimilarityHead(n_embd, n_outputs, dropout, init_std)
    if kind == "multiple_choice":
        return MultipleChoiceHead(n_embd, n_outputs, dropout, init_std)
    raise ValueError(f"unknown head kind {kind!r}; expected one of {', '.join(HEAD_KINDS)}")


def gather_extract(hidden: torch.Tensor, extract_pos: torch.Tensor) -> torch.Tensor:
    """Hidden states ``[B*K, T, C]`` at ``extract_pos`` ``[B, K]`` -> ``[B, K, C]``."""
    B, K = extract_pos.shape
    flat = hidden[torch.arange(B * K, device=hidden.device), extract_pos.reshape(-1)]
    return flat.view(B, K, hidden.size(-1))
