"""Recipes: YAML files read with OmegaConf, merged onto a typed schema, then validated.

A recipe may extend another with ``base: relative/path.yaml`` and then states only what differs.
Command-line ``key=value`` overrides come last. Unknown keys are errors that name the key and
suggest the closest valid one; values are type-checked by OmegaConf against the dataclasses below.
Components are chosen by registered names (``data.name``, ``tokenizer.kind``, ``optim.schedule``),
never by import paths, so a recipe cannot import or run code.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gptkit.errors import ConfigError
from gptkit.monitor import check_mode, name_mode


@dataclass
class RunConfig:
    name: str = "run"  # the run folder is <dir>/<name>
    dir: str = "runs"
    seed: int = 1337
    data_dir: str | None = None  # corpora, tokenizers, shards; null = $GPTKIT_CACHE or ~/.cache/gptkit
    overwrite: bool = False  # allow a fresh run into a folder that already holds checkpoints


@dataclass
class GPTConfig:
    """The GPT-1 architecture (section 3.1 of the paper): sizes and dropouts of :class:`gptkit.model.GPT`.

    The defaults are the paper's 117M model. Defined here, without torch, because the recipe's
    ``model`` section is this plus how to run it (:class:`ModelConfig`).
    """

    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_ctx: int = 512  # context: learned position embeddings
    n_inner: int | None = None  # MLP width; None means 4 * n_embd (3072 in the paper)
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    resid_pdrop: float = 0.1
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02  # N(0, init_std) for every weight matrix and embedding
    vocab_size: int = 40481  # 40,478 BPE tokens + _start_, _delimiter_, _classify_

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def mlp_width(self) -> int:
        return self.n_inner or 4 * self.n_embd

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(GPTConfig)}


@dataclass
class ModelConfig(GPTConfig):
    """The recipe's ``model`` section: the architecture (:class:`GPTConfig`) and how to run it."""

    vocab_size: int | None = None  # null: the tokenizer's (a recipe that sets it must match the tokenizer)
    compile: bool | None = None  # torch.compile the backbone; null = on for CUDA, off elsewhere
    compile_mode: str = "default"  # torch.compile mode when compiling: default | max-autotune-no-cudagraphs | ...
    compile_tuning: bool = False  # inductor's coordinate-descent tuning of the fused kernels (more compile time)
    clf_pdrop: float = 0.1  # fine-tuning: dropout before the task head (the released code's clf_pdrop)

    def __post_init__(self) -> None:  # (checked with the other recipe values, as a one-line error)
        pass


@dataclass
class TokenizerConfig:
    kind: str = "bpe"  # bpe (trained on the corpus) | openai-gpt (exact released pipeline) | openai-gpt-fast
    path: str | None = None  # tokenizer.json; null = <data_dir>/tokenizers/<corpus key>/tokenizer.json
    vocab_size: int = 40478  # learned BPE tokens; the three special tokens come on top
    lowercase: bool = True
    min_frequency: int = 2
    train_max_bytes: int | None = None  # train on at most this much text (null = the whole corpus)


@dataclass
class DataConfig:
    name: str = "pretrain"  # pretrain, or a fine-tuning task (sst2, race, ...)
    corpus: str | None = None  # a catalogue corpus (`gptkit data list`), e.g. news
    files: Any = field(default_factory=list)  # pretrain: .txt / .jsonl / .csv files or globs; table: split -> file
    text_field: str = "text"  # JSONL key / CSV column holding the text
    root: str | None = None  # folder of a task's official files
    subset: str | None = None  # task subset, e.g. RACE middle | high | all
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool | None = None  # null = on when training on CUDA
    val_fraction: float = 0.005  # pretraining: held-out tail of the token stream
    group_by_length: bool = False  # fine-tuning: batch examples of similar length (less padding)
    skip_bad_rows: bool = False  # fine-tuning: skip malformed rows (and report how many) instead of failing
    train_examples: int | None = None  # fine-tuning: train on a random subsample of this many examples, drawn with run.seed (null = all)
    verify_shards: bool = True  # re-hash token shards before training on them
    # Your own labelled files (name: table); files is then a mapping {train: .., validation: .., test: ..}
    transform: str | None = None  # table: classification | entailment | similarity | multiple_choice
    columns: Any = None  # table: role -> column, e.g. {text: review, label: sentiment}
    labels: Any = "infer"  # table: the class names in order; infer (from train, sorted); null = a regression score
    metrics: list[str] | None = None  # table: acc f1 mcc | pearson spearman; null = acc (regression: both)
    format: str | None = None  # table: csv | tsv | jsonl | parquet | hf; null = from each file's name
    delimiter: str | None = None  # table: the field delimiter of csv/tsv files; null = "," for csv, tab for tsv
    quoting: str | None = None  # table: csv (RFC 4180 quotes) | none (quotes are text); null = csv for csv, none for tsv
    header: list[str] | None = None  # table: column names of files that have no header row
    val_from_train: float | None = None  # table without a validation file: hold out this fraction of train
    split_seed: int = 0  # table: the seed of that held-out fraction


@dataclass
class ObjectiveConfig:
    lm_coef: float = 0.5  # weight of the auxiliary LM loss when fine-tuning (0 turns it off)
    nonfinite: str = "stop"  # stop | skip: what a NaN/inf loss does
    chunked_lm_loss: bool = True  # fused LM head + cross-entropy over row chunks (no full logits kept)


@dataclass
class OptimConfig:
    lr: float = 2.5e-4
    weight_decay: float = 0.01  # decoupled (AdamW), on weight matrices and embeddings only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: str = "cosine"  # cosine | linear | constant (all after linear warmup)
    warmup_steps: int = 2000
    warmup_ratio: float | None = None  # if set, warmup = ratio * total updates (overrides warmup_steps)
    fused: bool | None = None  # fused AdamW; null = on where PyTorch has it (CUDA; CPU from 2.4)


@dataclass
class InitConfig:
    checkpoint: str | None = None  # a gptkit .ckpt or pretrained folder to start from
    n_transfer: int | None = None  # transfer the embeddings and only the first k blocks


@dataclass
class TrainerConfig:
    """Passed to ``pytorch_lightning.Trainer`` as keyword arguments."""

    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed ... (Lightning's registry)
    precision: str | None = None  # null: bf16-mixed on CUDA GPUs of capability 8.0+, 16-mixed on older, else 32-true
    max_epochs: int | None = None
    max_steps: int = -1
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    val_check_interval: Any = None  # int (batches) or float (fraction of an epoch)
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 50
    deterministic: bool = False


@dataclass
class CheckpointConfig:
    monitor: str = "val/loss"
    mode: str | None = None  # null: follows the monitor (min for a loss or perplexity, max for accuracy...)
    save_top_k: int = 1
    every_n_train_steps: int | None = None  # also save `last` every n updates (null: at validation)


@dataclass
class LoggingConfig:
    progress: str = "auto"  # auto (rich on a terminal, plain lines otherwise) | rich | plain | none
    throughput: bool = True  # tokens/s and MFU through Lightning's ThroughputMonitor


@dataclass
class ZeroshotConfig:
    """Zero-shot scoring with the language model alone (``gptkit zeroshot``, and the curve during a fit):
    see docs/zeroshot.md and :mod:`gptkit.zeroshot`."""

    tasks: Any = field(default_factory=list)  # task names; fit: score them every every_n_steps; the verb: these (default: the recipe's task)
    every_n_steps: int = 200  # fit: score every n updates (and at update 0 and at the end)
    split: str = "validation"  # validation | test: the split scored
    max_examples: int | None = None  # the verb: a seeded subsample of the split (null = all of it)
    fit_max_examples: int | None = 500  # fit: the fixed seeded subsample scored at every point (null = all)
    threshold_examples: int | None = 2000  # CoLA, WNLI: training examples the threshold is chosen on (null = all)
    seed: int = 0  # the subsamples' seed
    batch_size: int = 32  # sequences per forward pass
    prompt: dict[str, str] = field(default_factory=dict)  # task -> words appended before the verbaliser (default: very)
    verbalisers: dict[str, list[str]] = field(default_factory=dict)  # task -> one word per label (polarity, sst2: negative, positive)
    roots: dict[str, str] = field(default_factory=dict)  # task -> its data folder (tasks other than the recipe's own)
    untrained: bool = False  # the verb: score a randomly initialised model of the same size instead


@dataclass
class GptkitConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    init: InitConfig = field(default_factory=InitConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    zeroshot: ZeroshotConfig = field(default_factory=ZeroshotConfig)
    ckpt_path: str | None = None  # resume fit from, or evaluate, this checkpoint


CHOICES = {
    "optim.schedule": ("cosine", "linear", "constant"),
    "tokenizer.kind": ("bpe", "openai-gpt", "openai-gpt-fast"),
    "logging.progress": ("auto", "rich", "plain", "none"),
    "checkpoint.mode": ("min", "max", None),
    "objective.nonfinite": ("stop", "skip"),
    "model.compile_mode": ("default", "max-autotune-no-cudagraphs", "max-autotune", "reduce-overhead"),
    "data.transform": (None, "classification", "entailment", "similarity", "multiple_choice"),
    "data.format": (None, "csv", "tsv", "jsonl", "parquet", "hf"),
    "data.quoting": (None, "csv", "none"),
    "zeroshot.split": ("validation", "test"),
}


def _suggest(word: str, options: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    return f"; valid keys under '{prefix or '(top level)'}': {', '.join(sorted(options))}"


def _check_keys(node: Any, schema: type, where: str, prefix: str = "") -> None:
    """Reject keys that the schema does not have, naming the closest valid key."""
    if not isinstance(node, dict):
        return
    valid = {f.name: f for f in fields(schema)}
    for key, value in node.items():
        full = f"{prefix}{key}"
        if key not in valid:
            raise ConfigError(f"unknown key '{full}' in {where}{_suggest(str(key), list(valid), prefix)}")
        factory = valid[key].default_factory
        sub = factory() if factory is not MISSING else None
        if is_dataclass(sub):
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"'{full}' in {where} must be a mapping of keys, got {value!r}")
            _check_keys(value, type(sub), where, f"{full}.")


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """The recipe and the recipes it extends, base first."""
    if not path.is_file():
        hint = f" (extended by {chain[-1]})" if chain else ""
        if path.is_dir():
            found = sorted(p.name for p in path.glob("*.yaml"))
            held = f" (it holds {', '.join(found[:6])}{' ...' if len(found) > 6 else ''})" if found else ""
            raise ConfigError(f"recipe {path}{hint} is a directory, not a recipe file; give one of its YAML files{held}")
        raise ConfigError(f"recipe {path}{hint} does not exist; check the path (shipped recipes are in recipes/)")
    if path.resolve() in {p.resolve() for p in chain}:
        raise ConfigError(f"recipe {path} extends itself through 'base:' ({' -> '.join(map(str, chain))})")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # YAML syntax errors
        msg = str(exc).strip().splitlines()
        raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(msg[:3])}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of keys, got {type(data).__name__}")
    base = data.pop("base", None)
    layers: list[tuple[Path, dict]] = []
    if base is not None:
        for b in [base] if isinstance(base, str) else base:
            layers += _read_yaml((path.parent / str(b)), chain + (path,))
    return layers + [(path, data)]


def parse_overrides(overrides: list[str]) -> dict:
    """``key=value`` pairs (dotted keys, YAML values) as a nested dict."""
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value (e.g. trainer.max_steps=100)")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except Exception as exc:  # OmegaConf's own errors and YAML syntax errors in values (e.g. [*.txt])
        detail = " ".join(str(exc).split())
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {detail} (quote values that YAML would "
                          "misread, e.g. data.files='[\"*.txt\"]')") from None


def load_config(recipe: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Read a recipe (and its bases), apply overrides, validate; returns a typed, read-only config."""
    layers = _read_yaml(Path(recipe)) if recipe is not None else []
    layers.append((Path("command line"), parse_overrides(list(overrides))))
    cfg = OmegaConf.structured(GptkitConfig)
    for where, data in layers:
        _check_keys(data, GptkitConfig, str(where))
        files = data["data"].get("files") if isinstance(data.get("data"), dict) else None
        if isinstance(files, str):
            data["data"]["files"] = files = [files]  # data.files=my.txt: a list of one
        if isinstance(files, (list, dict)) and not isinstance(cfg.data.files, type(OmegaConf.create(files))):
            cfg.data.files = None  # a mapping (a table's splits) replaces a list, and the other way round
        try:
            cfg = OmegaConf.merge(cfg, data)
        except OmegaConfBaseException as exc:
            key = getattr(exc, "full_key", "") or ""
            detail = str(exc).splitlines()[0]
            raise ConfigError(f"invalid value for '{key}' in {where}: {detail}") from None
        except OverflowError:  # an integer too large for a float field (OmegaConf names no key)
            raise ConfigError(f"a number in {where} is too large for its key; check the numeric values") from None
    try:  # interpolations (${...}) are resolved now, so a bad one is a recipe error, not a crash later
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        raise ConfigError(f"cannot resolve '{key}': {str(exc).splitlines()[0]}") from None
    _check_values(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


# Numeric ranges, checked after merging: key -> rule, as the error message states it. A null value passes
# where the schema allows null (it means "use the default"); elsewhere OmegaConf has already refused it.
RULES = {
    "positive": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    ">= 1": lambda v: v >= 1,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    "in (0, 1)": lambda v: 0 < v < 1,
    "-1 (keep all) or >= 0": lambda v: v >= -1,
}
RANGES = {
    **dict.fromkeys(["model.n_layer", "model.n_head", "model.n_embd", "model.n_ctx",
                     "model.vocab_size", "model.layer_norm_eps", "model.init_std", "data.batch_size",
                     "tokenizer.vocab_size", "trainer.accumulate_grad_batches", "optim.lr", "optim.eps"],
                    "positive"),
    **dict.fromkeys(["model.embd_pdrop", "model.attn_pdrop", "model.resid_pdrop", "model.clf_pdrop"], "in [0, 1)"),
    **dict.fromkeys(["optim.weight_decay", "optim.warmup_steps", "data.num_workers", "objective.lm_coef",
                     "trainer.gradient_clip_val"], ">= 0"),
    "optim.warmup_ratio": "in [0, 1]",
    "data.val_from_train": "in (0, 1)",
    "data.eval_batch_size": ">= 1",
    "data.train_examples": ">= 1",
    "checkpoint.save_top_k": "-1 (keep all) or >= 0",
    **dict.fromkeys(["zeroshot.every_n_steps", "zeroshot.max_examples", "zeroshot.fit_max_examples",
                     "zeroshot.threshold_examples", "zeroshot.batch_size"], ">= 1"),
}


def _nullable(key: str) -> bool:
    """Whether the schema lets ``key`` (dotted) be null."""
    schema: Any = GptkitConfig
    *parents, name = key.split(".")
    for parent in parents:
        schema = get_type_hints(schema)[parent]
    return type(None) in get_args(get_type_hints(schema)[name])


def _check_values(cfg: DictConfig) -> None:
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"'{key}' is {value!r}; choose one of {', '.join(a or 'null' for a in allowed)}")
    for key, rule in RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and not RULES[rule](value):
            null = " (or null)" if _nullable(key) else ""
            raise ConfigError(f"'{key}' must be {rule}{null}, got {value}")
    if cfg.model.n_embd % cfg.model.n_head:
        raise ConfigError(
            f"model.n_embd ({cfg.model.n_embd}) must be divisible by model.n_head ({cfg.model.n_head})"
        )
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1, got {cfg.data.val_fraction}")
    _check_data_files(cfg.data)
    if cfg.data.name == "pretrain" and cfg.data.train_examples is not None:
        raise ConfigError("data.train_examples subsamples a fine-tuning task's training split; pretraining reads all of "
                          "its text (drop data.train_examples, or set data.name to a task)")
    _check_zeroshot(cfg.zeroshot)
    betas = list(cfg.optim.betas)
    if len(betas) != 2 or not all(RULES["in [0, 1)"](b) for b in betas):
        raise ConfigError(f"optim.betas must hold two numbers, each in [0, 1), got {betas}")
    check_mode(cfg.checkpoint.monitor, cfg.checkpoint.mode, name_mode(cfg.checkpoint.monitor))  # tasks: when built
    if str(cfg.trainer.strategy).startswith("ddp_spawn"):  # it pickles the whole run into each process
        raise ConfigError(f"trainer.strategy={cfg.trainer.strategy} is not supported (it pickles the run into each "
                          "process); use trainer.strategy=ddp, or ddp_fork / ddp_notebook in a notebook")
    name = cfg.run.name
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"run.name {name!r} must be a plain folder name (not empty, '.' or '..', no '/' or "
                          f"'\\'): the run folder is <run.dir>/<run.name>; set run.dir to put runs elsewhere")


def _check_data_files(data: DictConfig) -> None:
    """``data.files``: a list of files or globs (pretraining), or a mapping from split to file (a table);
    ``data.delimiter``: one character."""
    files = data.files
    if files is None:
        raise ConfigError("data.files is null; leave it out (or []) when there are no files")
    values = list(files.values()) if isinstance(files, DictConfig) else list(files)
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise ConfigError(f"data.files must hold file paths (strings), got {OmegaConf.to_container(files)}")
    if data.delimiter is not None and len(data.delimiter) != 1:
        raise ConfigError(f"data.delimiter must be one character (e.g. ';' or '|'), got {data.delimiter!r}")


def zeroshot_tasks(zeroshot: DictConfig) -> list[str]:
    """``zeroshot.tasks`` as a list of names (``zeroshot.tasks=polarity`` is a list of one)."""
    tasks = zeroshot.tasks
    return [tasks] if isinstance(tasks, str) else list(tasks or [])


def _check_zeroshot(zeroshot: DictConfig) -> None:
    """``zeroshot.tasks``: task names; ``zeroshot.verbalisers``: non-empty words. (Whether each task has a
    heuristic, and each word is one token, is checked when the tokenizer is known: gptkit.zeroshot.)"""
    tasks = zeroshot.tasks
    if tasks is not None and not isinstance(tasks, (str, ListConfig)):
        raise ConfigError(f"zeroshot.tasks must be a list of task names, e.g. zeroshot.tasks=[polarity], got {tasks!r}")
    for name in zeroshot_tasks(zeroshot):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"zeroshot.tasks must hold task names (e.g. [polarity, cola]), got {name!r}")
        if "," in name:
            raise ConfigError(f"zeroshot.tasks={name}: list several tasks in brackets, e.g. "
                              f"zeroshot.tasks='[{name}]'")
    for task, words in zeroshot.verbalisers.items():
        if not words or not all(w.strip() for w in words):
            raise ConfigError(f"zeroshot.verbalisers.{task} must hold one non-empty word per label, got {list(words)}")


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
