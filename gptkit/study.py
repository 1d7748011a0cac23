"""Studies: does generative pretraining help, and by how much? One command, built from the kit's verbs.

::

    gptkit study recipes/study/pretraining-helps.yaml [--small] [--out DIR] [--publish docs/study]

A study file names a pretraining recipe, fine-tuning recipes (one per dataset), labelled-set sizes
(``data.train_examples``), seeds, a tuning grid and the arms to compare (see docs/study.md):

``scratch``     fine-tuned from random weights (the pretraining run's tokenizer, the same model size)
``pretrained``  fine-tuned from the pretraining run's ``last.ckpt`` (an arm's overrides make the
                ablations: ``objective.lm_coef=0``, ``init.n_transfer=k``)
``zeroshot``    the pretrained LM alone on the test split (``gptkit zeroshot``), no fine-tuning
``untrained``   the same heuristic on a randomly initialised model of the same size, one per seed
``tfidf``       TF-IDF + logistic regression (scikit-learn), for context

What it does, in order, every step restartable (a rerun trains nothing finished):

1. checks the whole study (every run's config is built with :func:`gptkit.config.load_config`) before
   anything runs, and how much of each dataset's text the pretraining corpus holds (8-word shingles);
2. fits the pretraining run (``<out>/runs/pretrain``, ``ckpt_path=auto``) unless it has ended;
3. for each dataset, fine-tuned arm and size: a sweep (:mod:`gptkit.sweep`) over the tuning grid with
   the first seed, each point fitted and then validated at its best checkpoint; the setting with the
   best validation metric is chosen (ties: the first in grid order); a second sweep runs that setting
   for every seed and evaluates each run's best checkpoint on validation, then on test. Every arm and
   size gets the same grid, so the same number of trials; the TF-IDF arm gets as many values of C;
4. the zero-shot and baseline arms, cached in the study folder;
5. writes ``study.csv``, ``study.md`` and the plots into the study folder, and with ``--publish``
   copies the page (as ``results.md``) and the plots into a docs folder.

The test split is read only by the final sweep's evaluations and the baselines' last step: no choice
is made on it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gptkit.config import load_config
from gptkit.console import duration, log
from gptkit.errors import ConfigError
from gptkit.outputs import (
    atomic_write_bytes,
    atomic_write_text,
    held_folder,
    make_folder,
    output_folder,
    read_manifest,
)

KINDS = ("scratch", "pretrained", "zeroshot", "untrained", "tfidf")
FINETUNED = ("scratch", "pretrained")
TOP_KEYS = ("name", "pretrain", "datasets", "finetune_overrides", "sizes", "seeds", "tune", "size_overrides",
            "arms", "targets", "small")
ARM_KEYS = ("kind", "overrides", "sizes", "datasets")
TARGET_KEYS = ("dataset", "size", "margin", "accuracy", "pretrain_hours", "zeroshot_se")
# Keys the study sets itself in every run.
RESERVED = ("run.seed", "run.name", "run.dir", "init.checkpoint", "data.train_examples", "ckpt_path")
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "n_ctx")
MANIFEST, CSV_FILE, TABLE_FILE, LOCK_FILE = "study.json", "study.csv", "study.md", ".lock"
PUBLISHED_PAGE = "results.md"
STUDY_DIR = "${study_dir}"  # in a study file's overrides: the folder of the study file
SHINGLE = 8  # words per shingle of the overlap check
OVERLAP_FLAG = 0.5  # an example with at least this share of its shingles in the pretraining text is flagged
PLOT_HINT = "pip install 'gptkit[study]'"

Size = int | None  # a labelled-set size; None: all of the training split


def size_label(size: Size) -> str:
    return "all" if size is None else str(size)


# -- the study file ---------------------------------------------------------------------------------
@dataclass
class Arm:
    name: str
    kind: str
    overrides: list[str]
    sizes: list[Size]
    datasets: list[str]

    @property
    def n_transfer(self) -> int | None:
        """``k`` of an ``init.n_transfer=k`` override (the blocks-transferred plot), else None."""
        for o in reversed(self.overrides):
            key, _, value = o.partition("=")
            if key.strip() == "init.n_transfer":
                return None if value.strip() in ("null", "None", "") else int(value)
        return None


@dataclass
class Dataset:
    name: str
    recipe: Path
    overrides: list[str]  # after the study's and the size's: what this dataset needs
    sizes: list[Size] | None = None  # the study's sizes it is fine-tuned at (None: all of them)


@dataclass
class Study:
    """A study file, read and checked (:func:`read_study`)."""

    path: Path
    name: str
    small: bool
    pretrain_recipe: Path
    pretrain_overrides: list[str]
    datasets: dict[str, Dataset]
    finetune_overrides: list[str]
    sizes: list[Size]
    seeds: list[int]
    tune: dict[str, Any]  # key -> values, or key -> {size: values}
    size_overrides: dict[str, list[str]]  # size label -> overrides
    arms: list[Arm]
    targets: dict[str, Any]
    folder: Path = field(default=Path("."))

    def grid(self, size: Size) -> list[tuple[str, list[str]]]:
        """The tuning grid at ``size``: each key and its values (as override text)."""
        out = []
        for key, values in self.tune.items():
            if isinstance(values, dict):
                values = values.get(size_label(size), values.get("default"))
            out.append((key, [_text(v) for v in values]))
        return out

    def trials(self, size: Size) -> int:
        return math.prod(len(v) for _, v in self.grid(size))

    def identity(self) -> dict:
        """What makes two runs of the command the same study (study.json keeps it)."""
        return {"study": str(self.path.resolve()), "small": self.small, "pretrain": [str(self.pretrain_recipe),
                *self.pretrain_overrides], "datasets": {k: [str(d.recipe), *d.overrides, [size_label(x) for x in d.sizes or []]]
                                                        for k, d in self.datasets.items()},
                "finetune_overrides": self.finetune_overrides, "sizes": [size_label(s) for s in self.sizes],
                "seeds": self.seeds, "tune": {s: self.grid(None if s == "all" else int(s)) for s in map(size_label, self.sizes)},
                "size_overrides": self.size_overrides,
                "arms": [[a.name, a.kind, a.overrides, [size_label(s) for s in a.sizes], a.datasets] for a in self.arms]}

    @property
    def runs(self) -> Path:
        return self.folder / "runs"

    @property
    def pretrain_run(self) -> Path:
        return self.runs / "pretrain"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _bad(path: Path, message: str) -> ConfigError:
    return ConfigError(f"study file {path}: {message} (see docs/study.md)")


def _list_of_str(path: Path, where: str, value: Any, study_dir: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise _bad(path, f"{where} must be a list of key=value overrides, got {value!r}")
    for v in value:
        key = v.partition("=")[0].strip()
        if key in RESERVED:
            raise _bad(path, f"{where}: {key} is set by the study for every run; drop {v!r}")
    return [v.replace(STUDY_DIR, study_dir) for v in value]


def _sizes(path: Path, where: str, value: Any) -> list[Size]:
    if not isinstance(value, list) or not value:
        raise _bad(path, f"{where} must be a non-empty list of labelled-set sizes (integers >= 1, or all), got {value!r}")
    out: list[Size] = []
    for v in value:
        if v == "all":
            out.append(None)
        elif isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            out.append(v)
        else:
            raise _bad(path, f"{where}: {v!r} is not a labelled-set size (an integer >= 1, or all)")
    if len(set(out)) != len(out):
        raise _bad(path, f"{where} repeats a size: {value}")
    return out


def read_study(path: str | os.PathLike, small: bool = False) -> Study:
    """Read and check a study file; ``small`` merges its ``small:`` section over the rest (mappings
    merged key by key, lists and values replaced). Every mistake is one ConfigError naming the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist; shipped studies are in recipes/study/")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception as exc:  # YAML syntax errors
        raise _bad(path, f"not valid YAML: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(data, dict):
        raise _bad(path, "it must be a mapping of keys (name, pretrain, datasets, sizes, seeds, tune, arms, ...)")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise _bad(path, f"unknown key {unknown[0]!r}; a study file has {', '.join(TOP_KEYS)}")
    part = data.pop("small", None)
    if small:
        if not isinstance(part, dict):
            raise _bad(path, "--small needs a 'small:' section (what the small setting changes)")
        unknown = [k for k in part if k not in TOP_KEYS or k == "small"]
        if unknown:
            raise _bad(path, f"unknown key {unknown[0]!r} under small")
        data = OmegaConf.to_container(OmegaConf.merge(data, part))
    study_dir = str(path.parent.resolve())
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise _bad(path, f"name must be a plain name (letters, digits, . _ -), got {name!r}")

    pre = data.get("pretrain")
    if not isinstance(pre, dict) or not isinstance(pre.get("recipe"), str) or set(pre) - {"recipe", "overrides"}:
        raise _bad(path, "pretrain must be a mapping with recipe: (a pretraining recipe, relative to the study file) "
                         "and optionally overrides: [key=value, ...]")
    pre_recipe = (path.parent / pre["recipe"]).resolve()
    pre_overrides = _list_of_str(path, "pretrain.overrides", pre.get("overrides"), study_dir)

    sets = data.get("datasets")
    if not isinstance(sets, dict) or not sets:
        raise _bad(path, "datasets must map each dataset's name to {recipe: fine-tuning recipe, overrides: [...]}")
    datasets = {}
    for key, spec in sets.items():
        if (not isinstance(spec, dict) or not isinstance(spec.get("recipe"), str)
                or set(spec) - {"recipe", "overrides", "sizes"}):
            raise _bad(path, f"datasets.{key} must be {{recipe: ..., overrides: [...], sizes: [...]}}, got {spec!r}")
        datasets[str(key)] = Dataset(str(key), (path.parent / spec["recipe"]).resolve(),
                                     _list_of_str(path, f"datasets.{key}.overrides", spec.get("overrides"), study_dir),
                                     _sizes(path, f"datasets.{key}.sizes", spec["sizes"]) if "sizes" in spec else None)

    sizes = _sizes(path, "sizes", data.get("sizes"))
    for ds in datasets.values():
        stray = [size_label(s) for s in ds.sizes or [] if s not in sizes]
        if stray:
            raise _bad(path, f"datasets.{ds.name}.sizes: {stray[0]} is not one of the study's sizes "
                             f"({', '.join(map(size_label, sizes))})")
    seeds = data.get("seeds")
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise _bad(path, f"seeds must be a non-empty list of distinct integers, got {seeds!r}")

    tune = data.get("tune")
    if not isinstance(tune, dict) or not tune:
        raise _bad(path, "tune must map recipe keys to the values tried (e.g. optim.lr: [1.0e-4, 3.0e-4]), or to "
                         "{size: values} for values that differ by labelled-set size")
    for key, values in tune.items():
        if key in RESERVED:
            raise _bad(path, f"tune: {key} is set by the study; it cannot be tuned")
        per = values if isinstance(values, dict) else {"default": values}
        for v in per.values():
            if not isinstance(v, list) or not v or len({_text(x) for x in v}) != len(v):
                raise _bad(path, f"tune.{key}: each value list must be non-empty and without repeats, got {v!r}")
        if isinstance(values, dict):
            missing = [size_label(s) for s in sizes if size_label(s) not in {str(k) for k in values} and "default" not in values]
            if missing:
                raise _bad(path, f"tune.{key} gives no values for size {missing[0]} (add it, or a default)")
            tune[key] = {str(k): v for k, v in values.items()}

    size_overrides = data.get("size_overrides") or {}
    if not isinstance(size_overrides, dict):
        raise _bad(path, "size_overrides must map a size to a list of overrides")
    size_overrides = {str(k): _list_of_str(path, f"size_overrides.{k}", v, study_dir) for k, v in size_overrides.items()}

    arms_spec = data.get("arms")
    if not isinstance(arms_spec, dict) or not arms_spec:
        raise _bad(path, "arms must map each arm's name to {kind: scratch | pretrained | zeroshot | untrained | tfidf, ...}")
    arms = []
    for arm_name, spec in arms_spec.items():
        if not isinstance(spec, dict) or spec.get("kind") not in KINDS:
            raise _bad(path, f"arms.{arm_name}: kind must be one of {', '.join(KINDS)}, got "
                             f"{spec.get('kind') if isinstance(spec, dict) else spec!r}")
        extra = set(spec) - set(ARM_KEYS)
        if extra:
            raise _bad(path, f"arms.{arm_name}: unknown key {sorted(extra)[0]!r}; an arm has {', '.join(ARM_KEYS)}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", str(arm_name)):
            raise _bad(path, f"arm name {arm_name!r} must be a plain name (letters, digits, . _ -)")
        arm_sizes = _sizes(path, f"arms.{arm_name}.sizes", spec["sizes"]) if "sizes" in spec else list(sizes)
        stray = [size_label(s) for s in arm_sizes if s not in sizes]
        if stray:
            raise _bad(path, f"arms.{arm_name}.sizes: {stray[0]} is not one of the study's sizes "
                             f"({', '.join(map(size_label, sizes))})")
        arm_sets = spec.get("datasets", list(datasets))
        if not isinstance(arm_sets, list) or not arm_sets or any(d not in datasets for d in arm_sets):
            raise _bad(path, f"arms.{arm_name}.datasets must list some of the study's datasets "
                             f"({', '.join(datasets)}), got {arm_sets!r}")
        overrides = _list_of_str(path, f"arms.{arm_name}.overrides", spec.get("overrides"), study_dir)
        if overrides and spec["kind"] not in FINETUNED:
            raise _bad(path, f"arms.{arm_name}: a {spec['kind']} arm takes no overrides (they change fine-tuning)")
        arms.append(Arm(str(arm_name), spec["kind"], overrides, arm_sizes, list(arm_sets)))

    targets = data.get("targets") or {}
    if not isinstance(targets, dict) or set(targets) - set(TARGET_KEYS):
        raise _bad(path, f"targets may hold {', '.join(TARGET_KEYS)}, got {targets!r}")
    if targets and targets.get("dataset") not in datasets:
        raise _bad(path, f"targets.dataset must be one of the study's datasets ({', '.join(datasets)})")
    return Study(path, name, small, pre_recipe, pre_overrides, datasets,
                 _list_of_str(path, "finetune_overrides", data.get("finetune_overrides"), study_dir),
                 sizes, list(seeds), tune, size_overrides, arms, targets)


# -- the plan ---------------------------------------------------------------------------------------
@dataclass
class Group:
    """One fine-tuned arm at one dataset and size: its tuning sweep and its final sweep over seeds."""

    dataset: Dataset
    arm: Arm
    size: Size
    base: list[str]  # every run's overrides but the tuned values, run.seed and run.name
    grid: list[tuple[str, list[str]]]

    @property
    def prefix(self) -> str:
        return f"{self.dataset.name}-{self.arm.name}-n{size_label(self.size)}"


def _pretrain_overrides(study: Study) -> list[str]:
    return [*study.pretrain_overrides, f"run.dir={study.runs}", "run.name=pretrain"]


def _finetune_base(study: Study, ds: Dataset, size: Size, pre_cfg, kind: str) -> list[str]:
    """The overrides every run of a dataset shares: the study's, the model size of the pretraining run,
    and where the weights (pretrained) or the tokenizer (from scratch) come from."""
    out = [*study.finetune_overrides, f"run.dir={study.runs}", *(f"model.{k}={pre_cfg.model[k]}" for k in MODEL_KEYS)]
    if kind in ("pretrained", "zeroshot", "untrained"):
        out.append(f"init.checkpoint={study.pretrain_run / 'checkpoints' / 'last.ckpt'}")
    else:
        out += ["init.checkpoint=null", f"tokenizer.path={study.pretrain_run / 'tokenizer.json'}"]
    if kind in FINETUNED:
        out += [*study.size_overrides.get(size_label(size), []), f"data.train_examples={size_label(size) if size else 'null'}"]
    return [*out, *ds.overrides]


def plan(study: Study) -> tuple[Any, list[Group]]:
    """The pretraining config and every fine-tuned group, each config checked (nothing runs)."""
    pre_cfg = _load(study, study.pretrain_recipe, _pretrain_overrides(study), "pretraining")
    if pre_cfg.data.name != "pretrain":
        raise _bad(study.path, f"pretrain.recipe {study.pretrain_recipe} is not a pretraining recipe (data.name is "
                               f"{pre_cfg.data.name})")
    groups = []
    for ds in study.datasets.values():
        for arm in study.arms:
            if ds.name not in arm.datasets:
                continue
            kind_sizes = [s for s in arm.sizes if ds.sizes is None or s in ds.sizes] if arm.kind in FINETUNED else [None]
            for size in kind_sizes:
                base = [*_finetune_base(study, ds, size, pre_cfg, arm.kind), *arm.overrides]
                cfg = _load(study, ds.recipe, [*base, f"run.seed={study.seeds[0]}"], f"datasets.{ds.name}, arm {arm.name}")
                if cfg.data.name == "pretrain":
                    raise _bad(study.path, f"datasets.{ds.name}.recipe {ds.recipe} is a pretraining recipe; name a "
                                           "fine-tuning recipe")
                if arm.kind in FINETUNED:
                    grid = study.grid(size)
                    for key, values in grid:  # every tuned value loads
                        for v in values:
                            _load(study, ds.recipe, [*base, f"{key}={v}"], f"tune.{key}={v}")
                    groups.append(Group(ds, arm, size, base, grid))
    return pre_cfg, groups


def _load(study: Study, recipe: Path, overrides: list[str], where: str):
    try:
        return load_config(recipe, overrides)
    except ConfigError as exc:
        raise _bad(study.path, f"{where}: {exc}") from None


# -- the study folder -------------------------------------------------------------------------------
def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _read_manifest(study: Study) -> dict:
    folder = output_folder(study.folder, "study folder")
    path = folder / MANIFEST
    if not path.is_file():
        if folder.is_dir() and any(folder.iterdir()):
            raise ConfigError(f"study folder {folder} holds files that are not a study's; pass a new folder with --out "
                              "(nothing was run)")
        return {}
    manifest, theirs = read_manifest(path, "identity", f"study folder {folder} holds a {MANIFEST} that is not a "
                                                       "study's; pass a new folder with --out (nothing was run)")
    mine = json.loads(json.dumps(study.identity()))
    if theirs != mine:
        differ = [k for k in mine if mine[k] != theirs.get(k)]
        raise ConfigError(f"study folder {folder} holds a study made with other settings ({', '.join(differ)} differ); "
                          "pass a new folder with --out, or delete it (nothing was run)")
    return manifest


def _write_manifest(study: Study, manifest: dict) -> None:
    manifest["identity"] = study.identity()
    atomic_write_text(study.folder / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def _hold(folder: Path):
    """One ``gptkit study`` at a time in a study folder."""
    return held_folder(folder, "study", "wait for it")


def _cached(path: Path, compute) -> Any:
    """``compute()``'s JSON value, kept in ``path`` so that a rerun reads it."""
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")
    return value


# -- the steps --------------------------------------------------------------------------------------
def _pretrain(study: Study, pre_cfg, manifest: dict) -> None:
    """Fit the pretraining run unless the study saw it end (its last.ckpt as it was then)."""
    last = study.pretrain_run / "checkpoints" / "last.ckpt"
    done = manifest.get("pretrain")
    if done and _stamp(last) == done.get("stamp"):
        log(f"study: pretraining run {study.pretrain_run} has ended; not refitted")
        return
    from gptkit import verbs

    log(f"study: pretraining {study.pretrain_run} ({'resuming' if last.is_file() else 'from the start'})")
    started = time.perf_counter()
    verbs.run("fit", load_config(study.pretrain_recipe, [*_pretrain_overrides(study), "ckpt_path=auto"]))
    seconds = time.perf_counter() - started + (done or {}).get("seconds", 0.0)
    import torch

    manifest["pretrain"] = {"stamp": _stamp(last), "seconds": seconds, "threads": torch.get_num_threads()}
    _write_manifest(study, manifest)


def _run_group(study: Study, g: Group) -> dict:
    """Tune on the first seed, then run the chosen setting for every seed; returns what was chosen and
    each seed's validation and test metrics."""
    from gptkit.sweep import Point, Sweep, plan_sweep, run_sweep

    recipe = str(g.dataset.recipe)
    s1 = study.seeds[0]
    swept = [(k, v) for k, v in g.grid if len(v) > 1]
    single = [f"{k}={v[0]}" for k, v in g.grid if len(v) == 1]
    trials: list[dict] = []
    if swept:
        tune = plan_sweep(recipe, [*g.base, *single, f"run.seed={s1}", f"run.name={g.prefix}",
                                   *(f"{k}={','.join(v)}" for k, v in swept)],
                          evals="validate", out=str(study.folder / "sweeps" / f"{g.prefix}-tune"))
        res = run_sweep(tune, plot=False)
        metric = tune.metric
        scored = [(p, m.get(metric)) for p, status, m in res.points]
        trials = [{"values": dict(p.values), "val": v} for p, v in scored]
        mode = "min" if metric.rsplit("/", 1)[-1].endswith("loss") else "max"
        ranked = [(p, v) for p, v in scored if v is not None]
        best = (max if mode == "max" else min)(ranked, key=lambda pv: pv[1]) if ranked else None
        first = best[0]
        chosen = [*single, *(f"{k}={v}" for k, v in first.values)]
        first_point = Point(((("run.seed", str(s1)),)), first.name, first.overrides, first.cfg)
        name = first.name
    else:
        chosen = single
        name = g.prefix
        first_point = None
    points = []
    for s in study.seeds:
        if s == s1 and first_point is not None:
            points.append(first_point)
            continue
        run_name = f"{name}-seed={s}"
        overrides = (*g.base, *chosen, f"run.seed={s}", f"run.name={run_name}")
        points.append(Point((("run.seed", str(s)),), run_name, overrides, load_config(recipe, list(overrides))))
    monitor = points[0].cfg.checkpoint.monitor.split("/", 1)[-1]
    final = Sweep(recipe, [*g.base, *chosen], [("run.seed", [str(s) for s in study.seeds])], points,
                  study.folder / "sweeps" / g.prefix, ("validate", "test"), f"test/{monitor}", g.prefix)
    res = run_sweep(final, plot=False)
    seeds = [{"seed": p.seed, "run": str(p.folder), "val": m.get(f"val/{monitor}"), "test": m.get(f"test/{monitor}")}
             for p, status, m in res.points]
    return {"chosen": chosen, "trials": trials, "seeds": seeds, "metric": monitor}


def _zeroshot(study: Study, ds: Dataset, pre_cfg, arm: Arm) -> list[dict]:
    """The zero-shot arm (one score: the pretrained LM is deterministic) or the untrained one (a model
    per seed) on the dataset's test split, through ``gptkit.verbs.zeroshot``; cached per score."""
    from gptkit import verbs

    seeds = study.seeds if arm.kind == "untrained" else [study.seeds[0]]
    out = []
    for s in seeds:
        name = f"{ds.name}-{arm.name}" + (f"-seed={s}" if arm.kind == "untrained" else "")
        overrides = [*_finetune_base(study, ds, None, pre_cfg, arm.kind), "zeroshot.split=test", f"run.seed={s}",
                     f"run.name={name}", *(["zeroshot.untrained=true"] if arm.kind == "untrained" else [])]

        def score(overrides=overrides, name=name):
            try:
                return {"metrics": verbs.zeroshot(load_config(ds.recipe, overrides))}
            except ConfigError as exc:  # e.g. a verbaliser word that is several tokens: reported, not fatal
                log(f"study: {name}: not scored: {exc}")
                return {"error": str(exc)}

        found = _cached(study.folder / "zeroshot" / f"{name}.json", score)
        metric = next((v for k, v in (found.get("metrics") or {}).items() if k.endswith("/acc")), None)
        out.append({"seed": s, "test": metric, "error": found.get("error")})
    return out


def _texts(ds: Dataset, cfg, split: str) -> tuple[list[str], list[int]]:
    """A dataset's texts and labels of ``split``, read as fine-tuning reads them."""
    from gptkit.data.cache import resolve_data_dir
    from gptkit.data.finetune import FinetuneDataModule
    from gptkit.tasks import task_of

    task = task_of(cfg.data)
    if task.transform != "classification":
        raise ConfigError(f"the tfidf arm reads single texts; {ds.name} is a {task.transform} task")
    dm = FinetuneDataModule(task, cfg.data.root, None, cfg.model.n_ctx, data_dir=resolve_data_dir(cfg.run.data_dir),
                            skip_bad_rows=cfg.data.skip_bad_rows, subset=cfg.data.subset)
    examples, _ = dm.examples(split)
    return [e.text_a for e in examples], [int(e.label) for e in examples]


def tfidf_grid(n: int) -> list[float]:
    """``n`` values of logistic regression's C, evenly spaced in log from 0.1 to 100 (the tfidf arm's
    trials: as many as a fine-tuned arm gets)."""
    if n == 1:
        return [1.0]
    return [float(f"{10 ** (-1 + 3 * i / (n - 1)):.4g}") for i in range(n)]


def _tfidf(study: Study, ds: Dataset, pre_cfg, size: Size) -> dict:
    """TF-IDF (word uni- and bigrams, sublinear tf) + logistic regression: C chosen on the dev split with
    the first seed's subsample, then each seed's subsample fitted with it and scored on test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from gptkit.data.finetune import subsample_indices

    cfg = load_config(ds.recipe, [*_finetune_base(study, ds, size, pre_cfg, "scratch"), f"run.seed={study.seeds[0]}"])
    train, train_y = _texts(ds, cfg, "train")
    dev, dev_y = _texts(ds, cfg, "dev")
    test, test_y = _texts(ds, cfg, "test")

    def fitted(seed: int, c: float):
        keep = subsample_indices(len(train), size, seed)
        ys = [train_y[i] for i in keep]
        if len(set(ys)) == 1:  # a small subsample of one class: the model that always answers it
            from sklearn.dummy import DummyClassifier

            return DummyClassifier(strategy="most_frequent").fit([[0]] * len(ys), ys)
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                              LogisticRegression(C=c, max_iter=2000))
        return model.fit([train[i] for i in keep], ys)

    def accuracy(model, xs, ys) -> float:
        return float(sum(int(p == y) for p, y in zip(model.predict(xs), ys)) / len(ys))

    grid = tfidf_grid(study.trials(size))
    trials = [{"values": {"C": c}, "val": accuracy(fitted(study.seeds[0], c), dev, dev_y)} for c in grid]
    best = max(trials, key=lambda t: t["val"])["values"]["C"]
    seeds = []
    for s in study.seeds:
        model = fitted(s, best)
        seeds.append({"seed": s, "val": accuracy(model, dev, dev_y), "test": accuracy(model, test, test_y)})
    return {"chosen": [f"C={best}"], "trials": trials, "seeds": seeds, "metric": "acc"}


def _shingles(text: str) -> set[int]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {hash(tuple(words[i : i + SHINGLE])) for i in range(len(words) - SHINGLE + 1)}


def _overlap(study: Study, pre_cfg) -> dict:
    """How much of each dataset's text is in the pretraining text: per dataset, the examples (all splits)
    with at least ``OVERLAP_FLAG`` of their 8-word shingles found there, and the largest share."""
    from gptkit.data.cache import resolve_data_dir
    from gptkit.data.sources import read_sources, resolve_sources

    sources = resolve_sources(list(pre_cfg.data.files), pre_cfg.data.corpus, pre_cfg.data.text_field,
                              resolve_data_dir(pre_cfg.run.data_dir))
    seen: set[int] = set()
    tail = ""
    for piece in read_sources(sources):  # pieces may cut a sentence: carry the last words over
        text = tail + piece
        seen |= _shingles(text)
        tail = " ".join(re.findall(r"[a-z0-9]+", text.lower())[-(SHINGLE - 1):]) + " "
    out = {"corpus": pre_cfg.data.corpus or ", ".join(map(str, pre_cfg.data.files)), "shingle": SHINGLE,
           "flag": OVERLAP_FLAG, "datasets": {}}
    for ds in study.datasets.values():
        cfg = load_config(ds.recipe, [*_finetune_base(study, ds, None, pre_cfg, "scratch")])
        flagged, largest, n = 0, 0.0, 0
        for split in ("train", "dev", "test"):
            texts, _ = _texts(ds, cfg, split)
            for t in texts:
                sh = _shingles(t)
                share = len(sh & seen) / len(sh) if sh else 0.0
                flagged += share >= OVERLAP_FLAG
                largest = max(largest, share)
                n += 1
        out["datasets"][ds.name] = {"examples": n, "flagged": flagged, "largest_share": largest}
    return out


# -- running it -------------------------------------------------------------------------------------
def run_study(study: Study, out: str | None = None, publish: str | None = None, command: str | None = None) -> Path:
    """Run (or go on with) a study; returns the study folder."""
    started = time.perf_counter()
    study.folder = (Path(out).expanduser() if out else Path("runs") / f"study-{study.name}{'-small' if study.small else ''}").absolute()
    if any(a.kind == "tfidf" for a in study.arms):
        try:
            import sklearn  # noqa: F401
        except ImportError:
            raise ConfigError(f"the study's tfidf arm needs scikit-learn: {PLOT_HINT}, or drop the arm") from None
    manifest = _read_manifest(study)
    pre_cfg, groups = plan(study)
    make_folder(study.folder, "study folder")
    with _hold(study.folder):
        # this command's wall time, kept up to date after every step (an interrupted command's counts too)
        import torch

        manifest.setdefault("invocations", []).append({"seconds": 0.0, "command": command,
                                                       "threads": torch.get_num_threads()})

        def tick() -> None:
            manifest["invocations"][-1]["seconds"] = time.perf_counter() - started
            _write_manifest(study, manifest)

        tick()
        overlap = _cached(study.folder / "overlap.json", lambda: _overlap(study, pre_cfg))
        _pretrain(study, pre_cfg, manifest)
        results: dict[tuple[str, str, str], dict] = {}
        for i, g in enumerate(groups, 1):
            log(f"study [{i}/{len(groups)}] {g.prefix}: {study.trials(g.size)} trial(s) on seed {study.seeds[0]}, "
                f"then seeds {', '.join(map(str, study.seeds))}")
            results[(g.dataset.name, g.arm.name, size_label(g.size))] = _run_group(study, g)
            tick()
        for ds in study.datasets.values():
            for arm in study.arms:
                if ds.name not in arm.datasets:
                    continue
                if arm.kind in ("zeroshot", "untrained"):
                    results[(ds.name, arm.name, "0")] = {"seeds": _zeroshot(study, ds, pre_cfg, arm), "chosen": [],
                                                         "trials": []}
                elif arm.kind == "tfidf":
                    for size in [s for s in arm.sizes if ds.sizes is None or s in ds.sizes]:
                        results[(ds.name, arm.name, size_label(size))] = _cached(
                            study.folder / "baselines" / f"{ds.name}-{arm.name}-n{size_label(size)}.json",
                            lambda ds=ds, size=size: _tfidf(study, ds, pre_cfg, size))
        n_all = {ds.name: len(_texts(ds, load_config(ds.recipe, _finetune_base(study, ds, None, pre_cfg, "scratch")),
                                     "train")[0]) for ds in study.datasets.values()}
        tick()
        report = Report(study, results, n_all, overlap, manifest, command or "", time.perf_counter() - started)
        page = report.write()
    log(f"study: {page} ({duration(time.perf_counter() - started)})")
    if publish:
        published = report.publish(Path(publish))
        log(f"study: published {published}")
    return study.folder


# -- the report -------------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


@dataclass
class Report:
    study: Study
    results: dict[tuple[str, str, str], dict]
    n_all: dict[str, int]
    overlap: dict
    manifest: dict
    command: str
    seconds: float
    plots: list[Path] = field(default_factory=list)

    def scores(self, dataset: str, arm: str, size: str) -> list[float]:
        found = self.results.get((dataset, arm, size))
        return [s["test"] for s in (found or {}).get("seeds", []) if s.get("test") is not None]

    def cell(self, dataset: str, arm: str, size: str) -> str:
        found = self.results.get((dataset, arm, size))
        if found is None:
            return "–"
        errors = [s["error"] for s in found["seeds"] if s.get("error")]
        if errors:
            return "not scored¹"
        values = self.scores(dataset, arm, size)
        if not values:
            return "no results"
        mean, std = _mean_std(values)
        return f"{_pct(mean)} ± {_pct(std)} (n={len(values)})" if len(values) > 1 else f"{_pct(mean)} (n=1)"

    def x(self, dataset: str, size: str) -> int:
        return self.n_all[dataset] if size == "all" else int(size)

    # -- files ---
    def write(self) -> Path:
        folder = self.study.folder
        self._csv(folder / CSV_FILE)
        self.plots = self._plots(folder)
        atomic_write_text(folder / TABLE_FILE, self.page())
        return folder / TABLE_FILE

    def publish(self, docs: Path) -> Path:
        docs = make_folder(docs, "--publish folder")
        for png in self.plots:
            shutil.copyfile(png, docs / png.name)
        atomic_write_text(docs / PUBLISHED_PAGE, self.page())
        return docs / PUBLISHED_PAGE

    def _csv(self, path: Path) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["dataset", "arm", "kind", "size", "examples", "seed", "chosen", "val_acc", "test_acc", "run"])
        kinds = {a.name: a.kind for a in self.study.arms}
        for (ds, arm, size), found in self.results.items():
            examples = 0 if size == "0" else self.x(ds, size)
            for s in found["seeds"]:
                w.writerow([ds, arm, kinds[arm], size, examples, s["seed"], " ".join(found.get("chosen", [])),
                            s.get("val", ""), s.get("test", ""), s.get("run", "")])
        atomic_write_text(path, buf.getvalue())

    def _plots(self, folder: Path) -> list[Path]:
        try:
            from matplotlib.figure import Figure
        except ImportError:
            log(f"study: no plots: matplotlib is not installed ({PLOT_HINT}); {CSV_FILE} and {TABLE_FILE} are written")
            return []
        paths = []
        study = self.study
        for ds in study.datasets:
            fig = Figure(figsize=(6.4, 4.4), layout="constrained")
            ax = fig.add_subplot()
            for arm in study.arms:
                if ds not in arm.datasets:
                    continue
                if arm.kind in ("zeroshot", "untrained"):
                    values = self.scores(ds, arm.name, "0")
                    if values:
                        ax.axhline(statistics.fmean(values), linestyle="--" if arm.kind == "zeroshot" else ":",
                                   color="grey" if arm.kind == "untrained" else "black", label=f"{arm.name} (no labels)")
                    continue
                pts = [(self.x(ds, size_label(s)), *_mean_std(v)) for s in arm.sizes
                       if (v := self.scores(ds, arm.name, size_label(s)))]
                if len(pts) < 1 or (arm.n_transfer is not None and len(arm.sizes) == 1):
                    continue
                pts.sort()
                xs, means, stds = (list(t) for t in zip(*pts))
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=arm.name,
                            linestyle="--" if arm.kind == "tfidf" else "-")
            ax.set(xscale="log", xlabel="labelled training examples (log)", ylabel="test accuracy",
                   title=f"{ds}: accuracy vs labelled examples (mean ± std over seeds)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
            paths.append(_save(fig, folder / f"accuracy-vs-examples-{ds}.png"))
            blocks = self._blocks(ds)
            if blocks:
                fig = Figure(figsize=(6.4, 4.4), layout="constrained")
                ax = fig.add_subplot()
                for size, pts in blocks.items():
                    xs, means, stds = (list(t) for t in zip(*sorted(pts)))
                    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{size} labelled examples")
                    scratch = [a for a in study.arms if a.kind == "scratch" and ds in a.datasets]
                    if scratch and (v := self.scores(ds, scratch[0].name, size)):
                        ax.axhline(statistics.fmean(v), linestyle=":", color="grey",
                                   label=f"{scratch[0].name}, {size} examples")
                ax.set(xlabel="pretrained blocks transferred (init.n_transfer; embeddings always)", ylabel="test accuracy",
                       title=f"{ds}: accuracy vs blocks transferred")
                ax.set_xticks(sorted({p[0] for pts in blocks.values() for p in pts}))
                ax.grid(alpha=0.3)
                ax.legend(fontsize="small")
                paths.append(_save(fig, folder / f"accuracy-vs-blocks-{ds}.png"))
        curve = study.pretrain_run / "zeroshot.jsonl"
        if curve.is_file():
            series: dict[str, list[tuple[int, float]]] = {}
            for line in curve.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    rec = json.loads(line)
                    series.setdefault(f"{rec['task']} {rec['metric']}", []).append((int(rec["step"]), float(rec["value"])))
            if series:
                fig = Figure(figsize=(6.4, 4.4), layout="constrained")
                ax = fig.add_subplot()
                for label, pts in series.items():
                    xs, ys = zip(*sorted(dict(pts).items()))
                    ax.plot(xs, ys, marker="o", label=label)
                ax.set(xlabel="pretraining updates", ylabel="zero-shot score (validation subsample)",
                       title="zero-shot accuracy over pretraining")
                ax.grid(alpha=0.3)
                ax.legend(fontsize="small")
                paths.append(_save(fig, folder / "zeroshot-over-pretraining.png"))
        return paths

    def _blocks(self, ds: str) -> dict[str, list[tuple[int, float, float]]]:
        """Per size: (blocks transferred, mean, std) of the arms with init.n_transfer and of the full
        pretrained arm (all blocks), where at least one n_transfer arm has results."""
        n_layer = self._n_layer()
        out: dict[str, list] = {}
        for arm in self.study.arms:
            if arm.kind != "pretrained" or ds not in arm.datasets or arm.n_transfer is None:
                continue
            for s in arm.sizes:
                if v := self.scores(ds, arm.name, size_label(s)):
                    out.setdefault(size_label(s), []).append((arm.n_transfer, *_mean_std(v)))
        full = next((a for a in self.study.arms if a.kind == "pretrained" and a.n_transfer is None and ds in a.datasets
                     and not any(o.startswith("objective.lm_coef") for o in a.overrides)), None)
        if full is not None:
            for size in out:
                if n_layer not in {k for k, _, _ in out[size]} and (v := self.scores(ds, full.name, size)):
                    out[size].append((n_layer, *_mean_std(v)))
        return out

    def _n_layer(self) -> int:
        return int(load_config(self.study.pretrain_recipe, _pretrain_overrides(self.study)).model.n_layer)

    # -- the page ---
    def page(self) -> str:
        study, kinds = self.study, {a.name: a.kind for a in self.study.arms}
        import torch

        from gptkit import __version__
        from gptkit.host import available_cores

        versions = [f"gptkit {__version__}", f"Python {platform.python_version()}", f"torch {torch.__version__}"]
        for module in ("pytorch_lightning", "torchmetrics", "sklearn", "matplotlib"):
            with contextlib.suppress(ImportError):
                versions.append(f"{module} {__import__(module).__version__}")
        invocations = self.manifest.get("invocations", [])
        total = sum(i["seconds"] for i in invocations)
        threads = [str(i.get("threads", "?")) for i in invocations]
        pre = self.manifest.get("pretrain") or {}
        lines = [f"# Study: {study.name}{' (small setting)' if study.small else ''}", "",
                 "Written by `gptkit study`; nothing on this page is typed by hand. "
                 "Accuracy in % on each dataset's test split: mean ± sample standard deviation over seeds, n runs.", "",
                 "```", self.command or f"gptkit study {study.path}", "```", "",
                 f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
                 f"- hardware: {platform.machine()} {_cpu_name()}, {available_cores()} cores available, "
                 f"torch threads {torch.get_num_threads()}" + (", CUDA " + torch.cuda.get_device_name(0)
                                                               if torch.cuda.is_available() else ", no GPU"),
                 f"- versions: {', '.join(versions)}",
                 f"- wall time: {duration(self.seconds)} for this command; {duration(total)} over the "
                 f"{len(invocations)} run(s) of it that made this folder (torch threads of each: {', '.join(threads)}"
                 + ("; ? where not recorded" if "?" in threads else "") + ")"
                 + (f"; pretraining {duration(pre['seconds'])} of it ({pre.get('threads')} torch thread(s))" if pre else ""),
                 f"- seeds: {', '.join(map(str, study.seeds))}; labelled-set sizes: "
                 f"{', '.join(map(size_label, study.sizes))} (all = {', '.join(f'{k} {v:,}' for k, v in self.n_all.items())})",
                 ""]
        lines += self._overlap_lines()
        for ds in study.datasets:
            arms = [a for a in study.arms if ds in a.datasets]
            lines += [f"## {ds}", "", "| arm | kind | " + " | ".join(
                f"n={size_label(s)}" for s in study.sizes) + " | no labels |", "|---|---|" + "---|" * (len(study.sizes) + 1)]
            for a in arms:
                cells = [self.cell(ds, a.name, size_label(s)) if a.kind not in ("zeroshot", "untrained") else "–"
                         for s in study.sizes]
                cells.append(self.cell(ds, a.name, "0") if a.kind in ("zeroshot", "untrained") else "–")
                what = a.kind + (f" ({' '.join(a.overrides)})" if a.overrides else "")
                lines.append(f"| {a.name} | {what} | " + " | ".join(cells) + " |")
            lines.append("")
            errors = {f"{a.name}: {s['error']}" for a in arms for s in self.results.get((ds, a.name, "0"), {}).get("seeds", [])
                      if s.get("error")}
            if errors:
                lines += ["¹ " + "; ".join(sorted(errors)), ""]
            for png in self.plots:
                if png.name.endswith(f"-{ds}.png"):
                    lines += [f"![{png.stem}]({png.name})", ""]
            lines += ["Chosen on the validation split with seed "
                      f"{study.seeds[0]} (trials per arm and size: the same grid for every fine-tuned arm, as many "
                      "values of C for tfidf):", "", "| arm | size | trials | chosen | val acc of the chosen trial |",
                      "|---|---|---|---|---|"]
            for (d, arm, size), found in self.results.items():
                if d != ds or kinds[arm] in ("zeroshot", "untrained"):
                    continue
                best = max((t["val"] for t in found["trials"] if t["val"] is not None), default=None)
                if best is None:
                    best = next((s["val"] for s in found["seeds"] if s.get("val") is not None), None)
                lines.append(f"| {arm} | {size} | {max(len(found['trials']), 1)} | {' '.join(found['chosen']) or '–'} | "
                             f"{_pct(best) if best is not None else '–'} |")
            lines.append("")
        png = self.study.folder / "zeroshot-over-pretraining.png"
        if png in self.plots:
            lines += ["## Zero-shot over pretraining", "",
                      "Scored during the pretraining fit (its zeroshot.jsonl) on a seeded subsample of the validation "
                      "split.", "", f"![zero-shot over pretraining]({png.name})", ""]
        lines += self._effect_lines()
        lines += self._target_lines()
        return "\n".join(lines) + "\n"

    def _effect_lines(self) -> list[str]:
        """Does each comparison show the paper's effect? Said for every dataset and size, with the numbers."""
        arms = self.study.arms
        scratch = next((a for a in arms if a.kind == "scratch" and not a.overrides), None)
        full = next((a for a in arms if a.kind == "pretrained" and not a.overrides), None)
        lines = ["## The paper's effects, as this study measured them", ""]
        for ds in self.study.datasets:
            for size in map(size_label, self.study.sizes):
                base = self.scores(ds, full.name, size) if full else []
                if not base:
                    continue
                (bm, bs) = _mean_std(base)
                if scratch and (v := self.scores(ds, scratch.name, size)):
                    sm, ss = _mean_std(v)
                    apart = (bm - bs) > (sm + ss)
                    shows = "shows" if apart else "does not clearly show (the seed spreads overlap)" if bm > sm else "does not show"
                    lines.append(f"- {ds}, {size} examples: pretrained - scratch = {100 * (bm - sm):+.1f} points "
                                 f"({_pct(bm)} ± {_pct(bs)} vs {_pct(sm)} ± {_pct(ss)}): {shows} the paper's effect "
                                 "(Table 5: pretraining helps, 14.8 points on average)")
                for a in arms:
                    if a.kind == "pretrained" and any(o.startswith("objective.lm_coef") for o in a.overrides):
                        if v := self.scores(ds, a.name, size):
                            am, as_ = _mean_std(v)
                            lines.append(f"- {ds}, {size} examples: without the auxiliary LM loss ({a.name}) - with it = "
                                         f"{100 * (am - bm):+.1f} points ({_pct(am)} ± {_pct(as_)} vs {_pct(bm)} ± "
                                         f"{_pct(bs)}); the paper finds the auxiliary loss helps on the larger datasets "
                                         "only (Table 5: 75.0 without, 74.7 with, on average)")
            for size, pts in self._blocks(ds).items():
                pts = sorted(pts)
                grows = all(b[1] >= a[1] for a, b in zip(pts, pts[1:]))
                lines.append(f"- {ds}, {size} examples, blocks transferred "
                             + ", ".join(f"{k}: {_pct(m)}" for k, m, _ in pts)
                             + f": accuracy {'grows' if grows else 'does not grow'} with every block added "
                             "(Figure 2 left: it grows)")
        return [*lines, ""] if len(lines) > 2 else []

    def _overlap_lines(self) -> list[str]:
        o = self.overlap
        lines = ["## Does the pretraining text contain the datasets?", "",
                 f"Every example (all splits) is cut into {o['shingle']}-word shingles and looked up in the pretraining "
                 f"text ({o['corpus']}); an example with at least {o['flag']:.0%} of its shingles there is counted as "
                 "contained.", "", "| dataset | examples | contained | largest share of one example's shingles |",
                 "|---|---|---|---|"]
        for name, d in o["datasets"].items():
            lines.append(f"| {name} | {d['examples']:,} | {d['flagged']:,} | {d['largest_share']:.1%} |")
        flagged = {name: d for name, d in o["datasets"].items() if d["flagged"]}
        if flagged:
            lines += ["", "**Contained in the pretraining text: " + "; ".join(
                f"{name} {d['flagged']:,} of {d['examples']:,} examples ({d['flagged'] / d['examples']:.2%})"
                for name, d in flagged.items()) + ".** The more of a dataset the pretraining text holds, the less its "
                "pretrained arms measure transfer alone."]
        return [*lines, ""]

    def _target_lines(self) -> list[str]:
        t = self.study.targets
        if not t:
            return []
        ds, size = t["dataset"], size_label(t.get("size", 1000))
        scratch = next((a.name for a in self.study.arms if a.kind == "scratch" and not a.overrides), None)
        pre = next((a.name for a in self.study.arms if a.kind == "pretrained" and not a.overrides), None)
        lines = ["## The issue's targets", ""]

        def verdict(ok: bool | None) -> str:
            return "not checked" if ok is None else "**met**" if ok else "**missed**"

        p, s = (self.scores(ds, pre, size) if pre else []), (self.scores(ds, scratch, size) if scratch else [])
        if p and s:
            (pm, ps), (sm, ss) = _mean_std(p), _mean_std(s)
            gap, apart = pm - sm, (pm - ps) > (sm + ss)
            need = t.get("margin", 0.10)
            lines.append(f"- {pre} beats {scratch} on {ds} at {size} labelled examples by >= {_pct(need)} points with "
                         f"non-overlapping spreads: {verdict(gap >= need and apart)} (gap {_pct(gap)} points: "
                         f"{_pct(pm)} ± {_pct(ps)} vs {_pct(sm)} ± {_pct(ss)}; spreads "
                         f"{'do not overlap' if apart else 'overlap'}"
                         + (f"; short by {_pct(need - gap)} points" if gap < need else "") + ")")
            need_acc = t.get("accuracy", 0.70)
            hours = (self.manifest.get("pretrain") or {}).get("seconds", 0) / 3600
            limit = t.get("pretrain_hours", 1.0)
            lines.append(f"- {pre} reaches >= {_pct(need_acc)}% on {ds} at {size} examples with at most {limit:g} "
                         f"hour(s) of pretraining: {verdict(pm >= need_acc and hours <= limit)} ({_pct(pm)}%"
                         + (f", short by {_pct(need_acc - pm)} points" if pm < need_acc else "")
                         + f"; pretraining took {hours:.2f} h)")
        else:
            lines.append(f"- pretrained vs scratch on {ds} at {size} examples: {verdict(None)} (the study has no results "
                         "for both arms at that size)")
        se_k = t.get("zeroshot_se", 3)
        zs = next((a.name for a in self.study.arms if a.kind == "zeroshot" and ds in a.datasets), None)
        un = next((a.name for a in self.study.arms if a.kind == "untrained" and ds in a.datasets), None)
        n_test = self._n_test(ds)
        chance = 1 / self._n_labels(ds)
        se = math.sqrt(chance * (1 - chance) / n_test) if n_test else float("nan")
        if zs and (v := self.scores(ds, zs, "0")):
            z = statistics.fmean(v)
            lines.append(f"- zero-shot {ds} clearly above chance (> {_pct(chance)}% + {se_k} binomial standard errors "
                         f"of the {n_test:,}-example test split = {_pct(chance + se_k * se)}%): "
                         f"{verdict(z > chance + se_k * se)} ({_pct(z)}%)")
        if un and (v := self.scores(ds, un, "0")):
            far = max(abs(x - chance) for x in v)
            lines.append(f"- the untrained model of the same size stays at chance (every seed within {se_k} standard "
                         f"errors, ±{_pct(se_k * se)} points): {verdict(far <= se_k * se)} "
                         f"({', '.join(_pct(x) for x in v)}%)")
        return [*lines, ""]

    def _n_test(self, ds: str) -> int:
        """Examples in the dataset's test split."""
        spec = self.study.datasets[ds]
        pre_cfg = load_config(self.study.pretrain_recipe, _pretrain_overrides(self.study))
        return len(_texts(spec, load_config(spec.recipe, _finetune_base(self.study, spec, None, pre_cfg, "scratch")),
                          "test")[0])

    def _n_labels(self, ds: str) -> int:
        from gptkit.tasks import task_of

        spec = self.study.datasets[ds]
        return len(task_of(load_config(spec.recipe, spec.overrides).data).labels)


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "CPU"


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed (``gptkit study ...``), for the page."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["gptkit", *args])


__all__ = ["Study", "read_study", "run_study", "plan", "tfidf_grid", "command_line"]
