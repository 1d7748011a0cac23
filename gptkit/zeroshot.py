"""Zero-shot heuristics: how much of a task the language model alone gets right, with no fine-tuning
(paper section 5, Figure 2 right).

Each task is scored by one heuristic, chosen by its kind (:func:`heuristic_of`); a "score" is always
a log-probability from the LM head (``backbone.lm_logits``) of the checkpoint, on its own tokenizer:

``verbaliser`` (classification: polarity, SST-2, your tables)
    The text, then the prompt (default ``very``); the label whose word (one per label, default
    ``negative`` / ``positive`` for polarity and SST-2) has the highest next-token log-probability.
``acceptability`` (CoLA)
    The sentence's average token log-probability; acceptable above a threshold, which is chosen on
    (a seeded subsample of) the training split to maximise the task's metric (MCC) and reported.
``multiple_choice`` (RACE, ROCStories, COPA)
    The answer with the highest average log-probability of its tokens after the context (and the
    question).
``winograd`` (WNLI)
    WNLI gives each substituted hypothesis on its own, not the pair of candidates, so the paper's
    "which substitution reads better" becomes: the hypothesis's ending shared with the premise is the
    rest of the sentence, the premise's token before it the pronoun and the hypothesis's tokens before
    it the candidate; the score is how much the candidate changes the rest's average log-probability
    compared with the pronoun (``mean log p(rest | before + candidate) - mean log p(rest | before +
    pronoun)``), entailed above a threshold chosen on the training split. A hypothesis that shares no
    word-bearing ending with its premise gives no substitution: it scores 0 and is counted.

Sequences are tokenised once, scored in batches of similar length, right-padded (causal attention
keeps padding out of every real position, and padded positions are never read), under
``torch.no_grad`` with the model in eval mode; the first token of a sequence has no context and is
never scored. :func:`zeroshot` is the ``gptkit zeroshot`` verb's work; :class:`ZeroshotCurve` the
callback that draws the curve during a fit.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from gptkit.config import zeroshot_tasks
from gptkit.console import log
from gptkit.errors import ConfigError, DataError
from gptkit.tasks.base import Example, TaskSpec

DEFAULT_PROMPT = "very"  # the paper's: "append the token very"
DEFAULT_VERBALISERS = {"polarity": ("negative", "positive"), "sst2": ("negative", "positive")}
TASK_HEURISTICS = {"cola": "acceptability", "wnli": "winograd"}  # tasks whose transform does not say
LOGIT_ROWS = 1024  # rows of LM-head logits computed at once (40,478 float32 logits each: 165 MB)
MAX_THRESHOLDS = 256  # candidate thresholds tried on the training scores
CURVE_FILE = "zeroshot.jsonl"
PLOT_FILE = "zeroshot.png"


# -- the LM's log-probabilities ---------------------------------------------------------------------
@torch.no_grad()
def lm_logprobs(backbone: torch.nn.Module, sequences: Sequence[Sequence[int]], rows: Sequence[Sequence[int]],
                targets: Sequence[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """For each sequence ``i`` and each of its positions ``rows[i][r]``, the LM's log-probabilities of the
    tokens ``targets[i][r, :]`` coming next: ``log p(targets[i][r, k] | sequences[i][: rows[i][r] + 1])``,
    a float32 ``[len(rows[i]), K]`` tensor on the CPU.

    Sequences of similar length share a batch (longest first, so little is padded); each batch is
    right-padded, which causal attention keeps out of every real position, and only the rows asked for
    go through the LM head, ``LOGIT_ROWS`` at a time. The backbone runs its eager ``forward`` (a compiled
    backbone would recompile for every new batch shape)."""
    device = next(backbone.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: list[torch.Tensor | None] = [None] * len(sequences)
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        T = max(len(sequences[i]) for i in batch)
        if T == 0:
            raise ValueError("cannot score an empty sequence")
        x = torch.zeros(len(batch), T, dtype=torch.long)
        for j, i in enumerate(batch):
            x[j, : len(sequences[i])] = torch.as_tensor(list(sequences[i]), dtype=torch.long)
        hidden = backbone.forward(x.to(device))
        flat = torch.cat([torch.as_tensor(list(rows[i]), dtype=torch.long) + j * T for j, i in enumerate(batch)])
        picked = hidden.reshape(len(batch) * T, -1)[flat.to(device)]
        wanted = torch.cat([targets[i] for i in batch]).to(device)
        parts = []
        for c in range(0, len(picked), LOGIT_ROWS):
            logits = backbone.lm_logits(picked[c : c + LOGIT_ROWS]).float()
            parts.append(torch.log_softmax(logits, dim=-1).gather(1, wanted[c : c + LOGIT_ROWS]))
        scores = torch.cat(parts).cpu() if parts else torch.zeros(0, wanted.size(1))
        for i, part in zip(batch, scores.split([len(rows[i]) for i in batch])):
            out[i] = part
    return out  # type: ignore[return-value]


def mean_logprobs(backbone: torch.nn.Module, sequences: Sequence[Sequence[int]], starts: Sequence[int],
                  batch_size: int) -> torch.Tensor:
    """Each sequence's average log-probability of its tokens from ``starts[i]`` on (``>= 1``: the first
    token has no context), each given all before it; NaN where nothing is scored."""
    rows = [range(s - 1, len(seq) - 1) for seq, s in zip(sequences, starts)]
    targets = [torch.as_tensor(list(seq[s:]), dtype=torch.long).view(-1, 1) for seq, s in zip(sequences, starts)]
    per_token = lm_logprobs(backbone, sequences, rows, targets, batch_size)
    return torch.stack([t.mean() if t.numel() else torch.tensor(math.nan) for t in per_token])


def next_token_logprobs(backbone: torch.nn.Module, sequences: Sequence[Sequence[int]], token_ids: Sequence[int],
                        batch_size: int) -> torch.Tensor:
    """``[N, K]``: the log-probability of each of ``token_ids`` coming right after each sequence."""
    wanted = torch.as_tensor(list(token_ids), dtype=torch.long).view(1, -1)
    rows = [[len(seq) - 1] for seq in sequences]
    return torch.cat(lm_logprobs(backbone, sequences, rows, [wanted] * len(sequences), batch_size))


# -- the heuristics ---------------------------------------------------------------------------------
@dataclass
class Inputs:
    """A split's examples as token sequences, encoded once. Sequence ``j`` belongs to example
    ``owners[j]`` in slot ``slots[j]`` (a multiple-choice answer, a Winograd side); its tokens from
    ``starts[j]`` on are the ones scored."""

    sequences: list[list[int]]
    starts: list[int]
    owners: list[int]
    slots: list[int]
    labels: torch.Tensor
    groups: torch.Tensor | None
    truncated: int = 0  # examples cut to the model's context
    unlocated: int = 0  # Winograd: examples that give no substitution

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    @property
    def majority(self) -> float:
        """The accuracy of always answering the most frequent label: where "chance" is for accuracy."""
        return float(torch.bincount(self.labels).max()) / max(1, len(self.labels))


def _inputs(examples: Sequence[Example], sequences, starts, owners, slots, truncated: int = 0,
            unlocated: int = 0) -> Inputs:
    labels = torch.tensor([int(e.label) for e in examples], dtype=torch.long)
    groups = (torch.tensor([-1 if e.group is None else e.group for e in examples], dtype=torch.long)
              if any(e.group is not None for e in examples) else None)
    return Inputs(sequences, starts, owners, slots, labels, groups, truncated, unlocated)


def _encode_texts(tokenizer, texts: list[str], chunk: int = 2048) -> list[list[int]]:
    ids: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        ids.extend(tokenizer.encode_batch(texts[start : start + chunk]))
    return ids


def _fill(inputs: Inputs, values: torch.Tensor, width: int, empty: float) -> torch.Tensor:
    """``[N, width]``: each sequence's value in its example's row and slot, ``empty`` elsewhere."""
    table = torch.full((inputs.n_examples, width), empty)
    if inputs.owners:
        table[torch.tensor(inputs.owners), torch.tensor(inputs.slots)] = values
    return table


class Heuristic:
    """How one task is scored: ``encode`` turns examples into :class:`Inputs` (once), ``scores`` gives each
    example a score (``[N]``, compared with a threshold) or one score per class or answer (``[N, K]``,
    the highest wins), and ``predict`` turns scores into the labels' indices."""

    name = ""
    thresholded = False  # scores are compared with a threshold chosen on the training split

    def __init__(self, task: TaskSpec, tokenizer, n_ctx: int, zeroshot: DictConfig) -> None:
        self.task, self.tokenizer, self.n_ctx = task, tokenizer, n_ctx

    def encode(self, examples: Sequence[Example]) -> Inputs:
        raise NotImplementedError

    def scores(self, backbone: torch.nn.Module, inputs: Inputs, batch_size: int) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, scores: torch.Tensor, threshold: float | None) -> torch.Tensor:
        if self.thresholded:
            return (scores > threshold).long()
        return scores.argmax(dim=1)

    def describe(self) -> str:
        return self.name


class Verbaliser(Heuristic):
    """Text + prompt; the label whose word is the likeliest next token."""

    name = "verbaliser"

    def __init__(self, task: TaskSpec, tokenizer, n_ctx: int, zeroshot: DictConfig) -> None:
        super().__init__(task, tokenizer, n_ctx, zeroshot)
        key = f"zeroshot.verbalisers.{task.name}"
        words = zeroshot.verbalisers.get(task.name)
        words = list(words) if words is not None else DEFAULT_VERBALISERS.get(task.name)
        labels = list(task.labels or ())
        if words is None:
            raise ConfigError(f"task {task.name} has no default verbaliser words for zero-shot scoring: name one word "
                              f"per label ({', '.join(labels)}), e.g. {key}=[{','.join(labels)}]")
        if len(words) != len(labels):
            raise ConfigError(f"{key} has {len(words)} word(s) ({', '.join(words)}) but task {task.name} has "
                              f"{len(labels)} labels ({', '.join(labels)}); give one word per label, in that order")
        self.words = [w.strip() for w in words]
        self.ids = [self._one_token(w, key) for w in self.words]
        if len(set(self.ids)) < len(self.ids):
            raise ConfigError(f"{key}: two labels have the same word ({', '.join(self.words)}); give each its own")
        self.prompt = str(zeroshot.prompt.get(task.name, DEFAULT_PROMPT)).strip()
        self.prompt_ids = tokenizer.encode(self.prompt) if self.prompt else []
        if len(self.prompt_ids) >= n_ctx:
            raise ConfigError(f"zeroshot.prompt.{task.name} is {len(self.prompt_ids)} tokens, as long as the model's "
                              f"context (n_ctx={n_ctx}); shorten it")

    def _one_token(self, word: str, key: str) -> int:
        ids = self.tokenizer.encode(word)
        if len(ids) != 1:
            pieces = " + ".join(repr(self.tokenizer.decode([i])) for i in ids) or "nothing"
            raise ConfigError(f"verbaliser word {word!r} ({key}) is {len(ids)} tokens for this checkpoint's tokenizer "
                              f"({pieces}); zero-shot compares one next-token probability per label, so choose words "
                              f"that are one token each (frequent words), one per label: {key}=[...]")
        return ids[0]

    def encode(self, examples: Sequence[Example]) -> Inputs:
        keep = self.n_ctx - len(self.prompt_ids)  # the end of a long text, nearest the prompt, is kept
        texts = _encode_texts(self.tokenizer, [e.text_a for e in examples])
        sequences = [t[-keep:] + self.prompt_ids if t else self.prompt_ids for t in texts]
        n = len(examples)
        return _inputs(examples, sequences, [len(s) for s in sequences], list(range(n)), [0] * n,
                       truncated=sum(len(t) > keep for t in texts))

    def scores(self, backbone: torch.nn.Module, inputs: Inputs, batch_size: int) -> torch.Tensor:
        return next_token_logprobs(backbone, inputs.sequences, self.ids, batch_size)

    def describe(self) -> str:
        words = ", ".join(f"{label}={word!r}" for label, word in zip(self.task.labels or (), self.words))
        return f"verbaliser: text + {self.prompt!r}, next word {words}"


class Acceptability(Heuristic):
    """The sentence's average token log-probability, thresholded."""

    name = "acceptability"
    thresholded = True

    def encode(self, examples: Sequence[Example]) -> Inputs:
        texts = _encode_texts(self.tokenizer, [e.text_a for e in examples])
        n = len(examples)
        return _inputs(examples, [t[: self.n_ctx] for t in texts], [1] * n, list(range(n)), [0] * n,
                       truncated=sum(len(t) > self.n_ctx for t in texts))

    def scores(self, backbone: torch.nn.Module, inputs: Inputs, batch_size: int) -> torch.Tensor:
        # a one-token sentence has nothing scored: 0 (the highest a log-probability can be)
        return mean_logprobs(backbone, inputs.sequences, inputs.starts, batch_size).nan_to_num(nan=0.0)

    def describe(self) -> str:
        return "acceptability: average token log-probability above a threshold chosen on train"


class MultipleChoice(Heuristic):
    """The answer with the highest average token log-probability after the context (and question)."""

    name = "multiple_choice"

    def encode(self, examples: Sequence[Example]) -> Inputs:
        texts = []
        for e in examples:
            texts += [e.text_a, e.text_b or "", *e.choices]
        ids = _encode_texts(self.tokenizer, texts)
        sequences, starts, owners, slots = [], [], [], []
        truncated, pos = 0, 0
        for i, e in enumerate(examples):
            context = ids[pos] + ids[pos + 1]
            answers = ids[pos + 2 : pos + 2 + len(e.choices)]
            pos += 2 + len(e.choices)
            cut = False
            for k, answer in enumerate(answers):
                kept = answer[: self.n_ctx // 2]  # an answer keeps its start; the context its end
                room = self.n_ctx - len(kept)
                ctx = context[-room:] if room > 0 else []
                cut = cut or len(kept) < len(answer) or len(ctx) < len(context)
                sequences.append(ctx + kept)
                starts.append(max(1, len(ctx)))
                owners.append(i)
                slots.append(k)
            truncated += cut
        return _inputs(examples, sequences, starts, owners, slots, truncated=truncated)

    def scores(self, backbone: torch.nn.Module, inputs: Inputs, batch_size: int) -> torch.Tensor:
        means = mean_logprobs(backbone, inputs.sequences, inputs.starts, batch_size).nan_to_num(nan=-math.inf)
        return _fill(inputs, means, max(inputs.slots, default=0) + 1, -math.inf)

    def describe(self) -> str:
        return "multiple choice: the answer with the highest average log-probability after the context"


@dataclass(frozen=True)
class Substitution:
    """A WNLI pair cut into words: the premise is ``before pronoun rest``, the hypothesis ends in
    ``candidate rest`` (``rest`` as each of them writes it)."""

    before: str
    pronoun: str
    candidate: str
    rest: str  # the hypothesis's
    premise_rest: str


def locate_substitution(premise: str, hypothesis: str) -> Substitution | None:
    """Where a WNLI hypothesis substitutes a candidate for the premise's pronoun, found on words (split at
    whitespace; compared without case): the longest ending the two share is the rest of the sentence
    (leaving the hypothesis at least one word of candidate and the premise one word, the pronoun, before
    it), and the hypothesis's words before it the candidate, less any start that repeats the premise's
    words before the pronoun ("that's exactly how Facebook" after "... that's exactly how it"). None when
    they share no ending with a letter or digit in it (the pronoun was the last word, or the hypothesis
    is reworded): the data gives no substitution to score."""
    p, h = premise.split(), hypothesis.split()
    lower_p, lower_h = [w.lower() for w in p], [w.lower() for w in h]
    n = 0
    while n < min(len(p), len(h)) and lower_p[-1 - n] == lower_h[-1 - n]:
        n += 1
    n = min(n, len(h) - 1, len(p) - 1)
    if n <= 0 or not any(ch.isalnum() for w in h[-n:] for ch in w):
        return None
    before, candidate = p[: len(p) - n - 1], h[: len(h) - n]
    for j in range(min(len(candidate) - 1, len(before)), 0, -1):
        if lower_p[len(before) - j : len(before)] == lower_h[:j]:
            candidate = candidate[j:]
            break
    return Substitution(" ".join(before), p[len(p) - n - 1], " ".join(candidate), " ".join(h[-n:]),
                        " ".join(p[-n:]))


class Winograd(Heuristic):
    """How much the hypothesis's candidate changes the likelihood of the rest of the sentence, compared with
    the premise's pronoun; entailed above a threshold chosen on train (see the module docstring)."""

    name = "winograd"
    thresholded = True

    def _fit(self, sequence: list[int], start: int) -> tuple[list[int], int]:
        cut = max(0, len(sequence) - self.n_ctx)  # the start of a long premise goes first
        return sequence[cut:], max(1, start - cut)

    def encode(self, examples: Sequence[Example]) -> Inputs:
        found = [(i, s) for i, e in enumerate(examples)
                 if (s := locate_substitution(e.text_a, e.text_b or "")) is not None]
        if not found:
            raise DataError(f"task {self.task.name}: none of its {len(examples)} examples gives a Winograd "
                            "substitution (a hypothesis that ends like its premise, the pronoun replaced by a "
                            "candidate); the winograd heuristic needs WNLI-style pairs")
        pieces = [text for _, s in found for text in (s.before, s.candidate, s.rest, s.pronoun, s.premise_rest)]
        ids = _encode_texts(self.tokenizer, pieces)
        sequences, starts, owners, slots = [], [], [], []
        truncated = 0
        for k, (i, _) in enumerate(found):
            before, candidate, rest, pronoun, premise_rest = ids[5 * k : 5 * k + 5]
            for slot, (head, tail) in enumerate(((before + candidate, rest), (before + pronoun, premise_rest))):
                fitted, start = self._fit(head + tail, len(head))
                truncated += slot == 0 and len(fitted) < len(head) + len(tail)
                sequences.append(fitted)
                starts.append(start)
                owners.append(i)
                slots.append(slot)
        return _inputs(examples, sequences, starts, owners, slots, truncated, len(examples) - len(found))

    def scores(self, backbone: torch.nn.Module, inputs: Inputs, batch_size: int) -> torch.Tensor:
        means = mean_logprobs(backbone, inputs.sequences, inputs.starts, batch_size)
        both = _fill(inputs, means, 2, math.nan)
        return (both[:, 0] - both[:, 1]).nan_to_num(nan=0.0)  # no substitution: no evidence either way

    def describe(self) -> str:
        return ("winograd: change in the rest's average log-probability, candidate vs pronoun, above a threshold "
                "chosen on train")


HEURISTICS: dict[str, type[Heuristic]] = {
    h.name: h for h in (Verbaliser, Acceptability, MultipleChoice, Winograd)
}


def heuristic_of(task: TaskSpec) -> str:
    """The heuristic that scores ``task``: by name (CoLA, WNLI), else by its transform; a task of a kind
    with none (entailment, similarity, a regression score) is a ConfigError."""
    if task.name in TASK_HEURISTICS:
        return TASK_HEURISTICS[task.name]
    if task.transform == "multiple_choice":
        return "multiple_choice"
    if task.transform == "classification" and not task.regression:
        return "verbaliser"
    kind = f"{task.transform}, a regression score" if task.regression else task.transform
    raise ConfigError(f"zero-shot scoring has no heuristic for task {task.name} ({kind}): the language model alone "
                      "scores classification (verbaliser words), CoLA (acceptability), multiple choice (RACE, "
                      "ROCStories, COPA) and WNLI (Winograd substitution); score one of those (e.g. "
                      "zeroshot.tasks=[polarity]), or fine-tune and use `gptkit test`")


def choose_threshold(scores: torch.Tensor, labels: torch.Tensor, metrics: Callable) -> tuple[float, float]:
    """The threshold on ``scores`` (above: label 1) that maximises the task's first metric (CoLA: MCC) on
    these labelled examples, among the midpoints between neighbouring scores (at most ``MAX_THRESHOLDS``
    of them, at evenly spaced quantiles) and one below all; returns (threshold, metric there)."""
    values = torch.unique(scores.double())
    middles = (values[1:] + values[:-1]) / 2
    if len(middles) > MAX_THRESHOLDS:
        middles = torch.quantile(middles, torch.linspace(0, 1, MAX_THRESHOLDS, dtype=torch.float64))
    candidates = torch.cat([values[:1] - 1, middles])
    collection = metrics()
    metric = collection[next(iter(collection.keys()))]
    best: tuple[float, float] | None = None
    with warnings.catch_warnings():  # (MCC warns when every prediction is one class: it is 0 there)
        warnings.simplefilter("ignore")
        for t in candidates.tolist():
            metric.reset()
            metric.update((scores.double() > t).long(), labels)
            value = float(metric.compute())
            if best is None or value > best[1]:
                best = (t, value)
    assert best is not None
    return best


def subsample(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """``n`` examples drawn without replacement with their own generator (no global random state is used),
    in their split's order; all of them when ``n`` is None or not fewer."""
    if n is None or len(examples) <= n:
        return examples
    chosen = np.random.default_rng(seed).choice(len(examples), size=n, replace=False)
    return [examples[i] for i in sorted(chosen.tolist())]


# -- a task, ready to score -------------------------------------------------------------------------
@dataclass
class ZeroshotTask:
    """One task's examples, encoded once for its heuristic: the split(s) scored and, for a thresholded
    heuristic, the training subsample the threshold is chosen on."""

    task: TaskSpec
    heuristic: Heuristic
    evals: list[tuple[str, Inputs]]
    train: Inputs | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def headline(self) -> str:
        """The metric the curve follows: the task's first (accuracy; MCC for CoLA), of its first split."""
        first = next(iter(self.task.metrics().keys()))
        return f"{first}{self.task.metric_suffix(self.evals[0][0])}"

    @property
    def n_examples(self) -> int:
        return sum(inputs.n_examples for _, inputs in self.evals)

    @property
    def majority(self) -> float:
        """The accuracy of always answering the most frequent label, on the (first) split scored."""
        return self.evals[0][1].majority

    def score(self, backbone: torch.nn.Module, batch_size: int) -> dict[str, float]:
        """``{"zeroshot/<task>/<metric>": value}`` (and ``.../threshold`` for a thresholded heuristic)."""
        out: dict[str, float] = {}
        threshold = None
        if self.train is not None:
            train_scores = self.heuristic.scores(backbone, self.train, batch_size)
            threshold, _ = choose_threshold(train_scores, self.train.labels, self.task.metrics)
            out[f"zeroshot/{self.name}/threshold"] = threshold
        for split, inputs in self.evals:
            preds = self.heuristic.predict(self.heuristic.scores(backbone, inputs, batch_size), threshold)
            metrics = self.task.make_metrics()
            metrics.update(preds, inputs.labels, inputs.groups)
            suffix = self.task.metric_suffix(split)
            out.update({f"zeroshot/{self.name}/{k}{suffix}": float(v) for k, v in metrics.compute().items()})
        return out


def _own_task(cfg: DictConfig, name: str) -> bool:
    from gptkit.tasks import canonical_name

    return cfg.data.name != "pretrain" and canonical_name(name) == canonical_name(cfg.data.name)


def _registered(name: str) -> TaskSpec:
    from gptkit.tasks import TABLE, get_task

    if name.strip().lower() == TABLE:
        raise ConfigError("zeroshot.tasks: a table task (data.name=table) is scored from its own recipe; leave "
                          "zeroshot.tasks unset there, or name registered tasks (listed in docs/finetuning.md)")
    return get_task(name)


def check_tasks(cfg: DictConfig, tokenizer, n_ctx: int) -> None:
    """Refuse, before any data is read, a task name that is unknown or has no heuristic, a verbaliser word
    that is several tokens, and ``zeroshot.*`` settings for tasks that are not known."""
    zs = cfg.zeroshot
    for key, mapping in (("verbalisers", zs.verbalisers), ("prompt", zs.prompt), ("roots", zs.roots)):
        for name in mapping:
            if not _own_task(cfg, name):
                _registered(name)
            if key == "roots" and _own_task(cfg, name):
                raise ConfigError(f"zeroshot.roots.{name}: task {name} is the recipe's own, read from data.root; "
                                  f"drop zeroshot.roots.{name}")
    for name in zeroshot_tasks(zs):
        if _own_task(cfg, name):
            continue  # (its TaskSpec is the recipe's, built with its data)
        _heuristic(cfg, _registered(name), tokenizer, n_ctx)


def _heuristic(cfg: DictConfig, task: TaskSpec, tokenizer, n_ctx: int) -> Heuristic:
    kind = heuristic_of(task)
    zs = cfg.zeroshot
    for key, mapping in (("verbalisers", zs.verbalisers), ("prompt", zs.prompt)):
        if kind != "verbaliser" and task.name in mapping:
            raise ConfigError(f"zeroshot.{key}.{task.name}: task {task.name} is scored by {kind}, which uses no "
                              f"verbaliser words or prompt; drop zeroshot.{key}.{task.name}")
    return HEURISTICS[kind](task, tokenizer, n_ctx, zs)


def task_data(cfg: DictConfig, name: str, tokenizer, n_ctx: int, recipe_data=None):
    """The FinetuneDataModule that reads task ``name``: the recipe's own (``recipe_data`` when already
    built, else :func:`gptkit.builder.build_datamodule`), or one for a registered task, from
    ``zeroshot.roots.<task>`` (polarity: fetched when unset)."""
    if _own_task(cfg, name):
        if recipe_data is not None:
            return recipe_data
        from gptkit.builder import build_datamodule

        return build_datamodule(cfg, tokenizer, None)
    from gptkit.data.finetune import FinetuneDataModule

    task = _registered(name)
    root = cfg.zeroshot.roots.get(task.name, cfg.zeroshot.roots.get(name))
    if root is None and task.needs_root and task.corpus is None:
        raise ConfigError(f"zeroshot.roots.{task.name} is not set: point it at the {task.title} files you downloaded "
                          f"(e.g. zeroshot.roots.{task.name}=~/data/...)")
    return FinetuneDataModule(task, root=root, tokenizer=tokenizer, n_ctx=n_ctx, seed=cfg.run.seed,
                              data_dir=cfg.run.data_dir)


def prepare(cfg: DictConfig, name: str, tokenizer, n_ctx: int, max_examples: int | None,
            recipe_data=None) -> ZeroshotTask:
    """Read task ``name``'s split (``zeroshot.split``) and, for a thresholded heuristic, its training
    split; draw the seeded subsamples; encode them once."""
    zs = cfg.zeroshot
    data = task_data(cfg, name, tokenizer, n_ctx, recipe_data)
    task = data.task
    heuristic = _heuristic(cfg, task, tokenizer, n_ctx)
    splits = task.val_splits if zs.split == "validation" else task.test_splits
    evals = []
    for split in splits:
        examples, _ = data.examples(split)
        if any(e.label is None for e in examples):
            raise DataError(f"task {task.name}: its {split} split carries no labels (GLUE keeps test labels private), "
                            "so it cannot be scored; use zeroshot.split=validation")
        evals.append((split, heuristic.encode(subsample(examples, max_examples, zs.seed))))
    train = None
    if heuristic.thresholded:
        examples, _ = data.examples("train")
        train = heuristic.encode(subsample([e for e in examples if e.label is not None], zs.threshold_examples,
                                           zs.seed))
    prepared = ZeroshotTask(task, heuristic, evals, train)
    for split, inputs in evals + ([("train", train)] if train is not None else []):
        note = f"{inputs.n_examples} {split}"
        if inputs.truncated:
            note += f" ({inputs.truncated} cut to n_ctx={n_ctx})"
        if inputs.unlocated:
            note += (f" ({inputs.unlocated} give no substitution: the hypothesis shares no ending with the premise; "
                     "they score 0)")
        prepared.notes.append(note)
    log(f"zero-shot {task.name}: {heuristic.describe()}; examples: {', '.join(prepared.notes)}")
    return prepared


def score_tasks(backbone: torch.nn.Module, tasks: Sequence[ZeroshotTask], batch_size: int,
                on_task: Callable[[ZeroshotTask, dict[str, float], float], None] | None = None) -> dict[str, float]:
    """Score every task with the backbone in eval mode (each module's mode is put back after) and no
    gradients; ``on_task(task, metrics, seconds)`` after each."""
    modes = {m: m.training for m in backbone.modules()}
    backbone.eval()
    out: dict[str, float] = {}
    try:
        for t in tasks:
            started = time.perf_counter()
            metrics = t.score(backbone, batch_size)
            out.update(metrics)
            if on_task is not None:
                on_task(t, metrics, time.perf_counter() - started)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return out


# -- the verb ---------------------------------------------------------------------------------------
@dataclass
class ZeroshotRun:
    """What ``gptkit zeroshot`` scored: the metrics, the run folder its results go to, and the checkpoint
    (None for an untrained model without one)."""

    metrics: dict[str, float]
    folder: Path
    checkpoint: Any  # a CheckpointInfo
    untrained: bool


def _checkpoint(cfg: DictConfig):
    """The checkpoint to score: ``ckpt_path`` (a .ckpt, last / best / auto of the recipe's run, or a
    pretrained-model folder), else ``init.checkpoint``; None when neither is set."""
    from gptkit.checkpoint import CheckpointInfo, read_init_checkpoint, resolve_ckpt_path
    from gptkit.errors import CheckpointError
    from gptkit.runfolder import run_dir

    if cfg.ckpt_path is not None and Path(cfg.ckpt_path).expanduser().is_dir():
        info = CheckpointInfo.read(cfg.ckpt_path)  # a `gptkit import` folder (the released GPT-1)
    else:
        path = resolve_ckpt_path(cfg, run_dir(cfg))
        info = CheckpointInfo.read(path) if path else None
    if info is None:
        return read_init_checkpoint(cfg)
    if not info.by_gptkit:
        raise CheckpointError(f"{info.path} was not written by gptkit (no model sizes in it); give a .ckpt from a "
                              "gptkit run or a `gptkit import` folder")
    return info


def _device(cfg: DictConfig) -> torch.device:
    wants_gpu = str(cfg.trainer.accelerator) in ("auto", "gpu", "cuda")
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


def zeroshot(cfg: DictConfig) -> ZeroshotRun:
    """Score a checkpoint's language model (or, with ``zeroshot.untrained``, a randomly initialised model of
    the same size) on ``zeroshot.tasks``, or the recipe's own task; see the module docstring. The caller
    seeds the random generators (an untrained model is drawn from them)."""
    from gptkit.builder import build_tokenizer
    from gptkit.checkpoint import adopt_model_sizes, transfer_backbone
    from gptkit.config import GPTConfig
    from gptkit.model import GPT
    from gptkit.runfolder import evaluation_dir

    zs = cfg.zeroshot
    names = zeroshot_tasks(zs) or ([] if cfg.data.name == "pretrain" else [cfg.data.name])
    if not names:
        raise ConfigError("`gptkit zeroshot` with a pretraining recipe needs the tasks to score: add "
                          "zeroshot.tasks=[polarity] (or a fine-tuning recipe, whose own task is scored)")
    info = _checkpoint(cfg)
    if info is None and not zs.untrained:
        raise ConfigError("`gptkit zeroshot` needs a checkpoint to score: add ckpt_path=PATH (a .ckpt, or a `gptkit "
                          "import` folder; last / best name the recipe's run), or set init.checkpoint; "
                          "zeroshot.untrained=true scores a randomly initialised model of the recipe's size")
    sizes_from = adopt_model_sizes(cfg, info, None) if info is not None else cfg
    sources = None
    if info is None and cfg.data.name == "pretrain":  # the tokenizer the recipe's pretraining trains (cached)
        from gptkit.data.cache import resolve_data_dir
        from gptkit.data.sources import resolve_sources

        sources = resolve_sources(list(cfg.data.files), cfg.data.corpus, cfg.data.text_field,
                                  resolve_data_dir(cfg.run.data_dir))
    tokenizer, _ = build_tokenizer(cfg, sources, info, None)
    if info is not None:
        info.check_tokenizer(tokenizer.fingerprint)
    model = sizes_from.model
    sizes = {f: model[f] for f in GPTConfig.__dataclass_fields__ if f != "vocab_size"}
    check_tasks(sizes_from, tokenizer, sizes["n_ctx"])
    backbone = GPT(GPTConfig(**sizes, vocab_size=tokenizer.vocab_size))
    if zs.untrained:
        of = f"the sizes of {info.path}" if info is not None else "the recipe's sizes"
        log(f"zero-shot: an untrained model of {of} ({sizes['n_layer']} layers x {sizes['n_embd']} wide), "
            f"N(0, {sizes['init_std']}) weights drawn with run.seed={cfg.run.seed}")
    else:
        transfer_backbone(backbone, info, None)
    tasks = [prepare(sizes_from, name, tokenizer, backbone.config.n_ctx, zs.max_examples) for name in names]
    backbone.to(_device(cfg))

    def report(t: ZeroshotTask, metrics: dict[str, float], seconds: float) -> None:
        log(f"zero-shot {t.name}: {t.headline} {metrics[f'zeroshot/{t.name}/{t.headline}']:.4f} "
            f"({t.n_examples} examples, {seconds:.1f}s; always the most frequent label: acc {t.majority:.4f})")

    metrics = score_tasks(backbone, tasks, zs.batch_size, report)
    folder = evaluation_dir(cfg, str(info.path) if info is not None and not info.is_folder else None)
    return ZeroshotRun(metrics, folder, info, bool(zs.untrained))


# -- the curve during a fit -------------------------------------------------------------------------
class ZeroshotCurve(pl.Callback):
    """Scores ``zeroshot.tasks`` every ``zeroshot.every_n_steps`` updates (and at update 0 and at the end of
    the fit) on a fixed, seeded subsample of each (``zeroshot.fit_max_examples``), encoded once; logs
    ``zeroshot/<task>`` to the fit's loggers (TensorBoard) and one JSON line per task and point to
    ``<run>/zeroshot.jsonl`` (step, task, metric, value, metrics, examples, seconds); at the end of the fit
    draws ``<run>/zeroshot.png`` (with matplotlib, the ``plot`` extra).

    It leaves training as it was: it scores in eval mode without gradients, puts every module's mode and
    every random generator's state back, and reads its own data, not the fit's batches, so the losses
    are those of a fit without it and exact resume still holds. Under DDP the first process scores and
    logs, once. A resumed fit drops the lines past the update it resumes from (scored after the
    checkpoint, before the stop), so each point appears once.
    """

    def __init__(self, cfg: DictConfig, tokenizer, run_dir: Path) -> None:
        strategy = str(cfg.trainer.strategy).lower()
        if strategy.startswith(("fsdp", "deepspeed")):
            raise ConfigError(f"zeroshot.tasks: the zero-shot curve scores the whole model in one process, which "
                              f"trainer.strategy={cfg.trainer.strategy} shards; use trainer.strategy=ddp, or drop "
                              "zeroshot.tasks and score checkpoints with `gptkit zeroshot`")
        self.cfg, self.tokenizer, self.run_dir = cfg, tokenizer, Path(run_dir)
        self.every = int(cfg.zeroshot.every_n_steps)
        self.names = zeroshot_tasks(cfg.zeroshot)
        check_tasks(cfg, tokenizer, cfg.model.n_ctx)
        self.tasks: list[ZeroshotTask] = []
        self.last_step: int | None = None

    @property
    def path(self) -> Path:
        return self.run_dir / CURVE_FILE

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.tasks:
            return
        from gptkit.data.finetune import FinetuneDataModule

        recipe_data = trainer.datamodule if isinstance(trainer.datamodule, FinetuneDataModule) else None
        n_ctx = pl_module.backbone.config.n_ctx
        self.tasks = [prepare(self.cfg, name, self.tokenizer, n_ctx, self.cfg.zeroshot.fit_max_examples, recipe_data)
                      for name in self.names]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._keep_until(trainer.global_step)
        if trainer.global_step == 0:
            self._score(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every == 0 and step != self.last_step:
            self._score(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step != self.last_step:
            self._score(trainer, pl_module)
        if trainer.is_global_zero:
            png = plot_curve(self.path, self.run_dir / PLOT_FILE)
            if png is not None:
                log(f"zero-shot curve -> {png}")

    def _keep_until(self, step: int) -> None:
        """A fresh fit starts the file afresh; a resumed one keeps the points up to its update."""
        if not self.path.is_file():
            return
        from gptkit.outputs import atomic_write_text

        kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if step and line.strip() and _step_of(line) is not None and _step_of(line) <= step]
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def _score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from gptkit.resume import collect_rng_state, restore_rng_state

        step = self.last_step = trainer.global_step
        if not trainer.is_global_zero:
            return
        state = collect_rng_state()  # (nothing here draws from them; kept so whatever runs cannot shift them)
        lines: list[dict] = []

        def record(t: ZeroshotTask, metrics: dict[str, float], seconds: float) -> None:
            value = metrics[f"zeroshot/{t.name}/{t.headline}"]
            for logger in trainer.loggers:
                logger.log_metrics({f"zeroshot/{t.name}": value, f"zeroshot/{t.name}/seconds": seconds}, step=step)
            lines.append({"step": step, "task": t.name, "metric": t.headline, "value": value,
                          "metrics": {k.rsplit("/", 1)[-1]: v for k, v in metrics.items()},
                          "examples": t.n_examples, "majority": t.majority, "seconds": round(seconds, 3)})
            log(f"zero-shot at update {step}: {t.name} {t.headline} {value:.4f} ({t.n_examples} examples, "
                f"{seconds:.1f}s)")

        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the update's own work is not timed as scoring
        started = time.perf_counter()
        try:
            with trainer.precision_plugin.forward_context():
                score_tasks(pl_module.backbone, self.tasks, self.cfg.zeroshot.batch_size, record)
        finally:
            restore_rng_state(state)
        from gptkit.callbacks import TokenThroughput

        throughput = TokenThroughput.of(trainer)
        if throughput is not None and hasattr(throughput, "clock_start"):
            throughput.clock_start += time.perf_counter() - started  # left out of tokens/s, as validation is
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.writelines(json.dumps(line) + "\n" for line in lines)


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_curve(path: Path) -> list[dict]:
    """The points of a ``zeroshot.jsonl`` file (unreadable lines are passed over)."""
    points = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            point = json.loads(line)
        except ValueError:
            continue
        if isinstance(point, dict) and {"step", "task", "value"} <= set(point):
            points.append(point)
    return points


def plot_curve(path: Path, png: Path) -> Path | None:
    """``png``: each task's zero-shot metric against the update (Figure 2 right), from ``path``; None (and a
    note) when matplotlib is missing or there are no points."""
    if not Path(path).is_file() or not (points := read_curve(path)):
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log(f"zero-shot: no {PLOT_FILE}: matplotlib is not installed (pip install 'gptkit[plot]'); the points are "
            f"in {path}")
        return None
    import io

    from gptkit.outputs import atomic_write_bytes

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for task in dict.fromkeys(p["task"] for p in points):
        mine = sorted((p["step"], p["value"]) for p in points if p["task"] == task)
        last = max((p for p in points if p["task"] == task), key=lambda p: p["step"])
        line, = ax.plot([s for s, _ in mine], [v for _, v in mine], marker="o", label=f"{task} ({last.get('metric')})")
        if last.get("metric", "").startswith("acc") and isinstance(last.get("majority"), float):
            ax.axhline(last["majority"], linestyle="--", linewidth=1, color=line.get_color(),
                       label=f"{task}: always the most frequent label")
    ax.set(xlabel="update", ylabel="zero-shot metric", title="zero-shot performance over pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(png, buf.getvalue())
    return png
