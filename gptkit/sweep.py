"""Sweeps: a grid of ``key=v1,v2,...`` overrides over one recipe, run as ordinary runs, and their
results gathered into a table and a plot.

::

    gptkit sweep recipes/quickstart/finetune.yaml init.n_transfer=0,1,2,3,4 run.seed=1,2 --metric test/acc

Each grid point is a normal run of the recipe, named after its values (``run.name`` of the recipe, or
of the command, then ``-n_transfer=2-seed=1``) in the recipe's ``run.dir``. It is fitted with
``ckpt_path=auto`` and evaluated with ``ckpt_path=best`` (``test``, ``validate`` and/or ``zeroshot``),
one point after another, in this process, through :func:`gptkit.verbs.run`: exactly what
:func:`point_commands` prints for a cluster to run instead. The sweep folder (default
``<run.dir>/sweep-<run.name>``) holds::

    sweep.json   what the sweep is (recipe, fixed overrides, grid) and which of its fits have ended
    sweep.csv    one row per point: its values, seed, run folder, status and metrics
    sweep.md     the metric's mean ± std over seeds (run.seed) for each combination of the other values
    sweep.png    the metric against the first swept key other than run.seed, a line per combination of
                 the other keys (matplotlib, the ``plot`` extra)

Restarting is running the same command again: a point whose run folder holds its results
(``results/<eval>.json``, newer than its ``last.ckpt``) is read, not rerun; a point whose fit has
ended (the sweep saw it end, or the run has other results) is evaluated only; any other point is
fitted with ``ckpt_path=auto``, which resumes its ``last.ckpt`` when it has one. Every grid value is checked with :func:`gptkit.config.load_config`
before anything runs. No heavy imports at module level: ``--print-commands`` stays instant.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import re
import shlex
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gptkit.config import load_config, parse_overrides
from gptkit.console import duration, log
from gptkit.errors import ConfigError, GptkitError
from gptkit.outputs import (
    CHECKPOINTS_DIR,
    RESULTS_DIR,
    atomic_write_bytes,
    atomic_write_text,
    checkpoint_run_folder,
    held_folder,
    make_folder,
    output_folder,
    read_manifest,
    read_results,
    refuse_foreign_files,
)

SEED_KEY = "run.seed"  # the key the table and the plot average over
EVALS = ("test", "validate", "zeroshot")  # what a point may be evaluated with (results/<eval>.json)
MANIFEST, CSV_FILE, TABLE_FILE, PLOT_FILE, LOCK_FILE = "sweep.json", "sweep.csv", "sweep.md", "sweep.png", ".lock"
OUTPUTS = (MANIFEST, CSV_FILE, TABLE_FILE, PLOT_FILE, LOCK_FILE)
# The sweep sets these itself for every point.
RESERVED = {
    "run.name": "each point's run.name is the sweep's (the recipe's, or run.name=PREFIX) followed by its values",
    "ckpt_path": "the sweep fits with ckpt_path=auto (resuming what an interrupted sweep left) and evaluates "
                 "ckpt_path=best",
}
# Model sizes a checkpoint may have set in a run's config.yaml (gptkit.checkpoint.adopt_model_sizes).
ADOPTED = ("model.n_layer", "model.n_head", "model.n_embd", "model.n_ctx", "model.n_inner", "model.vocab_size")
NAME_LIMIT = 150  # longer run names are shortened to the prefix and a hash of the values
PLOT_HINT = "pip install 'gptkit[plot]'"


# -- the grid -------------------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and quotes: ``0,1,2`` gives three values,
    ``[a.txt,b.txt],[c.txt]`` two lists, ``"a,b"`` one string. Raises ValueError when a bracket or a
    quote is left open."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"" and (i == start or text[i - 1] in "[{(,: "):  # YAML quotes open a value only
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
            if depth < 0:
                raise ValueError(f"'{ch}' closes a bracket that was not opened")
        elif ch == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError(f"a {'quote' if quote else 'bracket'} is left open")
    values.append(text[start:])
    return values


def parse_grid(overrides: Sequence[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Split a sweep's ``key=value`` arguments into the fixed overrides (as given) and the swept keys,
    each with its values in the order given: an argument whose value has a comma outside brackets
    and quotes (``init.n_transfer=0,1,2``) is swept, and replaces a fixed value of its key given
    before it (``$COMMON model.n_embd=32,64``)."""
    fixed: list[str] = []
    swept: list[tuple[str, list[str]]] = []
    keys: dict[str, str] = {}
    swept_keys: set[str] = set()
    for arg in overrides:
        key, eq, text = arg.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"override {arg!r} is not of the form key=value or key=v1,v2,... "
                              "(e.g. init.n_transfer=0,1,2 run.seed=1,2)")
        try:
            values = split_values(text)
        except ValueError as exc:
            raise ConfigError(f"cannot read {arg!r}: {exc} (a value with a comma goes in brackets or quotes, "
                              "e.g. data.files=[a.txt,b.txt],[c.txt])") from None
        # as in `gptkit fit`, a key given again replaces the earlier value; a swept key is given once
        if key in swept_keys:
            raise ConfigError(f"{key} is given twice ({keys[key]!r} and {arg!r}); a swept key is given once, with "
                              "all its values: key=v1,v2,...")
        keys[key] = arg
        if len(values) == 1:
            fixed.append(arg)
            continue
        fixed = [o for o in fixed if o.partition("=")[0].strip() != key]
        swept_keys.add(key)
        if key in RESERVED:
            raise ConfigError(f"{key} cannot be swept: {RESERVED[key]}")
        empty = [v for v in values if not v.strip()]
        if empty:
            raise ConfigError(f"grid key {key} has an empty value in {text!r}; drop the extra comma (a value that "
                              "holds a comma goes in quotes or brackets)")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(f"grid key {key} repeats the value {repeated[0]} in {text!r}; give each value once")
        swept.append((key, values))
    for key in RESERVED:
        if key == "ckpt_path" and key in keys:
            raise ConfigError(f"a sweep sets ckpt_path itself: {RESERVED[key]}; drop {keys[key]!r}")
    return fixed, swept


def _name_part(text: str) -> str:
    """A grid value as it reads in a run folder's name: ``1e-4``, ``a.txt_b.txt`` for ``[a.txt,b.txt]``."""
    text = text.strip().strip("'\"")
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "empty"


def _labels(keys: Sequence[str]) -> dict[str, str]:
    """How each swept key reads in run names: its last part (``n_transfer``), or all of it where two
    swept keys share a last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


# -- a planned sweep --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One grid point: an ordinary run of the recipe with the point's values and its own run.name."""

    values: tuple[tuple[str, str], ...]  # (swept key, value as given), in the grid's order
    name: str  # its run.name
    overrides: tuple[str, ...]  # every override that makes its run, run.name last
    cfg: DictConfig

    @property
    def folder(self) -> Path:
        return Path(self.cfg.run.dir).expanduser() / self.cfg.run.name

    @property
    def seed(self) -> int:
        return int(self.cfg.run.seed)

    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values)


@dataclass
class Sweep:
    """A grid over one recipe, every point's config built and checked (:func:`plan_sweep`)."""

    recipe: str
    fixed: list[str]  # the fixed overrides, as given
    grid: list[tuple[str, list[str]]]  # the swept keys and their values, as given
    points: list[Point]
    folder: Path  # the sweep folder
    evals: tuple[str, ...]
    metric: str | None  # None: the first metric the results hold
    prefix: str  # the points' run names start with it (the recipe's run.name, or the command's)

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.grid]

    @property
    def x_key(self) -> str | None:
        """The key the plot runs along: the first swept key other than run.seed."""
        return next((k for k in self.keys if k != SEED_KEY), None)

    def identity(self) -> dict:
        """What makes two sweeps the same (their sweep.json says it): the recipe, the fixed overrides
        and the grid; not --metric or --eval, which only choose what is gathered, nor the ``logging.*``
        overrides, which only change what a run prints."""
        kept = [o for o in self.fixed if not display_only(o.partition("=")[0])]
        return {"recipe": str(Path(self.recipe).expanduser().resolve()), "overrides": parse_overrides(kept),
                "grid": [[k, list(v)] for k, v in self.grid]}

    def command(self) -> str:
        """The command line that makes this sweep (as sweep.md shows it)."""
        grid = [f"{k}={','.join(v)}" for k, v in self.grid]
        return shlex.join(["gptkit", "sweep", self.recipe, *self.fixed, *grid])


def display_only(key: str) -> bool:
    """Whether an override key only changes what a run prints (``logging.progress``...)."""
    return key.strip().startswith("logging.")


def parse_evals(evals: str | Sequence[str]) -> tuple[str, ...]:
    """``test``, ``zeroshot``, ``test,zeroshot``...: the evaluations each point gets, checked."""
    names = [e.strip() for e in (evals.split(",") if isinstance(evals, str) else evals)]
    bad = [e for e in names if e not in EVALS]
    if bad or not names:
        raise ConfigError(f"--eval {','.join(names)!s}: choose one or more of {', '.join(EVALS)}, separated by commas "
                          "(e.g. --eval test,zeroshot)")
    return tuple(dict.fromkeys(names))


def plan_sweep(recipe: str, overrides: Sequence[str], evals: str | Sequence[str] = "test", metric: str | None = None,
               out: str | None = None) -> Sweep:
    """Read the grid and build every point's config with :func:`~gptkit.config.load_config`, so that a
    value that does not fit its key is one error, naming key and value, before anything runs.
    ``out`` is the sweep folder (default ``<run.dir>/sweep-<run.name>``)."""
    evals = parse_evals(evals)
    fixed, grid = parse_grid(overrides)
    if not grid:
        raise ConfigError("a sweep needs at least one swept key, key=v1,v2,... (e.g. init.n_transfer=0,1,2 or "
                          "run.seed=1,2,3); for a single run use `gptkit fit`")
    base = load_config(recipe, fixed)  # a mistake in the recipe or the fixed overrides is reported as it is
    if base.data.name == "pretrain" and "test" in evals:
        raise ConfigError("--eval test needs a fine-tuning recipe: pretraining has no test split; evaluate with "
                          "--eval validate (val/loss) or --eval zeroshot")
    prefix = _name_part(base.run.name)
    labels = _labels([k for k, _ in grid])
    own = [o for o in fixed if o.partition("=")[0].strip() != "run.name"]
    points, names, failures = [], {}, []
    for combo in itertools.product(*[[(k, v) for v in values] for k, values in grid]):
        name = prefix + "".join(f"-{labels[k]}={_name_part(v)}" for k, v in combo)
        if len(name) > NAME_LIMIT:
            name = f"{prefix}-{hashlib.sha1(repr(combo).encode()).hexdigest()[:12]}"
        label = ", ".join(f"{k}={v}" for k, v in combo)
        if name in names:
            raise ConfigError(f"grid points {names[name]} and {label} would share the run folder name {name}; make the "
                              "values differ in letters or digits, not only in punctuation")
        names[name] = label
        point_overrides = (*own, *(f"{k}={v}" for k, v in combo), f"run.name={name}")
        try:
            points.append(Point(tuple(combo), name, point_overrides, load_config(recipe, list(point_overrides))))
        except ConfigError as exc:
            failures.append((combo, str(exc)))
    if failures:
        raise _grid_error(failures, points)
    folder = Path(out) if out else Path(base.run.dir).expanduser() / f"sweep-{prefix}"
    if metric is None and evals[0] != "zeroshot":
        metric = f"{'val' if evals[0] == 'validate' else evals[0]}/{base.checkpoint.monitor.split('/', 1)[-1]}"
    return Sweep(str(recipe), fixed, grid, points, folder, evals, metric, prefix)


def _grid_error(failures: list[tuple[tuple, str]], points: list[Point]) -> ConfigError:
    """One message for the grid points whose config does not load: a value that fails at every point
    it is in (``init.n_transfer=a``) is named alone, as the value that does not fit its key; otherwise
    the first point that fails, with all its values (``model.n_embd=30, model.n_head=4``)."""
    working = {kv for p in points for kv in p.values}
    combo, message = failures[0]
    bad = next((kv for kv in combo if kv not in working), None)
    where = f"grid value {bad[0]}={bad[1]}" if bad else "grid point " + ", ".join(f"{k}={v}" for k, v in combo)
    more = f"; {len(failures) - 1} more of the grid's points fail too" if len(failures) > 1 else ""
    return ConfigError(f"{where}: {message}{more} (nothing was run)")


def point_commands(sweep: Sweep) -> list[str]:
    """One shell line per point: its ``gptkit fit`` and then its evaluations, for a cluster to run
    (a SLURM job array, ``xargs -P``, GNU parallel). ``ckpt_path=auto`` makes a line restartable."""
    lines = []
    for p in sweep.points:
        fit = shlex.join(["gptkit", "fit", sweep.recipe, *p.overrides, "ckpt_path=auto"])
        evals = [shlex.join(["gptkit", e, sweep.recipe, *p.overrides, "ckpt_path=best"]) for e in sweep.evals]
        lines.append(" && ".join([fit, *evals]))
    return lines


# -- a point's state --------------------------------------------------------------------------------
def _last(point: Point) -> Path:
    return point.folder / CHECKPOINTS_DIR / "last.ckpt"


def _stamp(path: Path) -> dict | None:
    """What identifies a file as it is now (its size and modification time), or None if it is missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def point_results(point: Point, evals: Sequence[str]) -> dict[str, float] | None:
    """The point's metrics from ``results/<eval>.json`` in its run folder for every evaluation, or None
    if one is missing, unreadable, scores a checkpoint of another run, or is older than the run's
    ``last.ckpt`` (the run trained on after it was evaluated)."""
    metrics: dict[str, float] = {}
    last = _stamp(_last(point))
    for kind in evals:
        path = point.folder / RESULTS_DIR / f"{kind}.json"
        try:
            scored, found = read_results(path)
            stamp = path.stat().st_mtime_ns
        except (OSError, ValueError):
            return None
        if not isinstance(found, dict):
            return None
        if scored is not None and checkpoint_run_folder(scored) != point.folder.resolve():
            return None
        if last is not None and last["mtime_ns"] > stamp:
            return None
        metrics.update({k: float(v) for k, v in found.items() if isinstance(v, (int, float))})
    return metrics


def _evaluated(point: Point) -> bool:
    """Whether the point's run folder holds results of some evaluation newer than its ``last.ckpt``:
    evaluations follow a fit that has ended (in a sweep, and in its ``--print-commands`` lines)."""
    return any(point_results(point, [kind]) is not None for kind in EVALS)


def check_run_folder(sweep: Sweep, point: Point) -> None:
    """Refuse a point's run folder that holds a run made with other settings (another sweep with the
    same run names): resuming or reading it would mix that run into this sweep. Compares the keys the
    sweep sets (fixed and swept) with the run's ``config.yaml``."""
    path = point.folder / "config.yaml"
    if not path.is_file():
        return
    try:
        theirs = OmegaConf.load(path)
    except Exception:  # (a damaged config.yaml: the fit or the evaluation will say what is wrong)
        return
    keys = [o.partition("=")[0].strip() for o in sweep.fixed] + sweep.keys
    differ = []
    for key in dict.fromkeys(keys):
        if key in RESERVED or key in ADOPTED or key == "run.dir" or display_only(key):
            continue
        mine, their = OmegaConf.select(point.cfg, key), OmegaConf.select(theirs, key, default="(unset)")
        mine, their = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (mine, their))
        if mine != their:
            differ.append(f"{key}={their} there, {mine} here")
    if differ:
        raise ConfigError(f"run folder {point.folder} holds a run made with other settings ({'; '.join(differ)}): "
                          f"another sweep's point of the same name. Give this sweep's runs their own names with "
                          f"run.name=PREFIX (and --out for its sweep folder), or delete that folder (nothing was run)")


# -- the sweep folder -------------------------------------------------------------------------------
def _read_manifest(sweep: Sweep) -> dict | None:
    """The sweep folder's sweep.json if it is this sweep's; None for a new or empty folder. Refuses a
    folder that holds another sweep's results, or files a sweep does not write."""
    folder = output_folder(sweep.folder, "sweep folder")
    path = folder / MANIFEST
    if not path.is_file():
        refuse_foreign_files(folder, "sweep folder", OUTPUTS, "it is not this sweep's folder")
        return None
    manifest, theirs = read_manifest(path, "sweep", f"sweep folder {folder} holds a {MANIFEST} that is not a sweep's; "
                                                    "pass a new folder with --out, or delete it (nothing was written)")
    if theirs != sweep.identity():
        mine = sweep.identity()
        differ = [k for k in mine if mine[k] != theirs.get(k)]
        what = "; ".join(f"{k}: {json.dumps(theirs.get(k))} there, {json.dumps(mine[k])} here" for k in differ)
        raise ConfigError(f"sweep folder {folder} holds another sweep's results ({what}); pass a new folder with "
                          f"--out, and give this sweep's runs their own names with run.name=PREFIX if its fixed "
                          f"overrides differ, or delete {folder} (nothing was written)")
    return manifest


def _write_manifest(sweep: Sweep, fitted: dict[str, dict]) -> None:
    record = {"sweep": sweep.identity(), "command": sweep.command(), "eval": list(sweep.evals),
              "metric": sweep.metric,
              "points": [{"run": p.name, "folder": str(p.folder), "values": dict(p.values)} for p in sweep.points],
              "fitted": fitted}
    atomic_write_text(sweep.folder / MANIFEST, json.dumps(record, indent=2) + "\n")


def _hold(folder: Path):
    """One ``gptkit sweep`` at a time in a sweep folder."""
    return held_folder(folder, "sweep", "wait for it (or see its progress with --collect)")


# -- the results ------------------------------------------------------------------------------------
@dataclass
class Group:
    """The points that differ only in run.seed, and the metrics of those with results."""

    values: tuple[tuple[str, str], ...]  # the non-seed swept values
    members: list[dict[str, float]]  # each finished point's metrics
    seeds: list[int]  # their seeds

    def scores(self, metric: str) -> list[float]:
        return [m[metric] for m in self.members if metric in m]

    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values)


@dataclass
class SweepResults:
    """What a sweep gathered: each point's status and metrics, and a group per combination of the
    non-seed values."""

    sweep: Sweep
    metric: str
    points: list[tuple[Point, str, dict[str, float]]]  # (point, status, metrics)
    groups: list[Group]
    failed: dict[str, str] = field(default_factory=dict)  # run name -> error message

    @property
    def missing(self) -> list[Point]:
        """The points without results."""
        return [p for p, status, _ in self.points if status != "done"]

    @property
    def metric_names(self) -> list[str]:
        """Every metric of the results, the chosen one first."""
        found = sorted({k for _, _, m in self.points for k in m} - {self.metric})
        return [self.metric, *found] if self.metric else found

    def lines(self) -> list[tuple[str, float]]:
        """``(name, mean)`` per group for stdout, e.g. ``("test/acc[init.n_transfer=2]", 0.71)``."""
        return [(f"{self.metric}[{g.label()}]" if g.values else self.metric, statistics.fmean(s))
                for g in self.groups if (s := g.scores(self.metric))]


def _choose_metric(sweep: Sweep, found: dict[str, float]) -> str:
    """``--metric``, checked against a point's metrics; without it, the first of them."""
    if sweep.metric is None:
        sweep.metric = sorted(found)[0]
        log(f"sweep: no --metric given; tabulating {sweep.metric} (of {', '.join(sorted(found))})")
    elif sweep.metric not in found:
        raise ConfigError(f"--metric {sweep.metric}: the points' results ({'/'.join(sweep.evals)}) hold "
                          f"{', '.join(sorted(found)) or 'no metrics'}; choose one of them")
    return sweep.metric


def gather(sweep: Sweep, results: dict[str, dict[str, float]], failed: dict[str, str] | None = None) -> SweepResults:
    """Each point's status and metrics, and the groups over seeds (``results``: run name -> metrics).
    Checks ``--metric`` against the first point's metrics."""
    failed = failed or {}
    first = next(iter(results.values()), None)
    metric = _choose_metric(sweep, first) if first is not None else (sweep.metric or "")
    points, groups = [], {}
    for p in sweep.points:
        metrics = results.get(p.name)
        status = "done" if metrics is not None else "failed" if p.name in failed else "no results"
        points.append((p, status, metrics or {}))
        key = tuple((k, v) for k, v in p.values if k != SEED_KEY)
        group = groups.setdefault(key, Group(key, [], []))
        if metrics is not None:
            group.members.append(metrics)
            group.seeds.append(p.seed)
    return SweepResults(sweep, metric, points, list(groups.values()), failed)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return _fmt(values[0])
    return f"{_fmt(statistics.fmean(values))} ± {_fmt(statistics.stdev(values))}"


def write_tables(res: SweepResults) -> tuple[Path, Path]:
    """``sweep.csv`` (a row per point) and ``sweep.md`` (mean ± sample std over seeds per group, and n)."""
    sweep, folder = res.sweep, make_folder(res.sweep.folder, "sweep folder")
    names = res.metric_names
    seeded = SEED_KEY in sweep.keys
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*sweep.keys, *([] if seeded else ["seed"]), "run", "status", *names])
    for p, status, metrics in res.points:
        writer.writerow([v for _, v in p.values] + ([] if seeded else [p.seed])
                        + [str(p.folder), status] + [metrics.get(m, "") for m in names])
    atomic_write_text(folder / CSV_FILE, buf.getvalue())

    keys = [k for k in sweep.keys if k != SEED_KEY]
    seeds = sorted({p.seed for p in sweep.points})
    lines = [f"# Sweep of {sweep.recipe}", "", "```", sweep.command(), "```", ""]
    if res.metric:
        over = f"over {SEED_KEY} = {', '.join(map(str, seeds))}" if seeded else f"(one seed: {SEED_KEY}={seeds[0]})"
        lines += [f"Mean ± sample standard deviation {over}; n: points with results. Each run is evaluated "
                  f"({', '.join(sweep.evals)}) at its best checkpoint (ckpt_path=best).", ""]
        header = [*(keys or ["points"]), f"**{res.metric}**", "n", *names[1:]]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for g in res.groups:
            cells = [v for _, v in g.values] or ["all"]
            cells += [_mean_std(g.scores(res.metric)), str(len(g.scores(res.metric)))]
            cells += [_mean_std(g.scores(m)) for m in names[1:]]
            lines.append("| " + " | ".join(cells) + " |")
    if res.missing:
        lines += ["", f"No results yet for {len(res.missing)} of {len(sweep.points)} points: "
                  + ", ".join(p.name for p in res.missing)]
    lines.append("")
    atomic_write_text(folder / TABLE_FILE, "\n".join(lines))
    return folder / CSV_FILE, folder / TABLE_FILE


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def write_plot(res: SweepResults) -> Path | None:
    """``sweep.png``: the metric against the first non-seed swept key, a line per combination of the
    other non-seed keys, the mean over seeds with a band (and error bars) of ± one standard deviation.
    None (and a note) when matplotlib is missing or there is nothing to plot."""
    sweep = res.sweep
    x_key = sweep.x_key
    if x_key is None or not any(g.scores(res.metric) for g in res.groups):
        log("sweep: no plot: " + ("only run.seed is swept (sweep.md has the mean)" if x_key is None
                                  else "no point has results yet"))
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log(f"sweep: no plot: matplotlib is not installed ({PLOT_HINT}); {CSV_FILE} and {TABLE_FILE} are written")
        return None
    x_values = next(v for k, v in sweep.grid if k == x_key)
    numbers = [_number(v) for v in x_values]
    numeric = all(n is not None for n in numbers)
    position = dict(zip(x_values, numbers if numeric else range(len(x_values))))
    lines: dict[tuple, list[Group]] = {}
    for g in res.groups:
        lines.setdefault(tuple((k, v) for k, v in g.values if k != x_key), []).append(g)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    for others, groups in lines.items():
        shown = sorted((position[dict(g.values)[x_key]], statistics.fmean(s), statistics.stdev(s) if len(s) > 1 else 0.0)
                       for g in groups if (s := g.scores(res.metric)))
        if not shown:
            continue
        xs, means, stds = (list(t) for t in zip(*shown))
        label = ", ".join(f"{k}={v}" for k, v in others) or None
        line = ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        if any(stds):
            lows, highs = [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)]
            ax.fill_between(xs, lows, highs, alpha=0.15, color=line.lines[0].get_color())
    if not numeric:
        ax.set_xticks(range(len(x_values)), x_values)
    seeds = sorted({p.seed for p in sweep.points})
    spread = f"mean ± std over {len(seeds)} seeds" if SEED_KEY in sweep.keys else f"seed {seeds[0]}"
    ax.set(xlabel=x_key, ylabel=res.metric, title=f"{sweep.prefix}: {res.metric} ({spread})")
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend(fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    path = sweep.folder / PLOT_FILE
    atomic_write_bytes(path, buf.getvalue())
    return path


def _write_outputs(res: SweepResults, plot: bool) -> None:
    csv_path, md_path = write_tables(res)
    png = write_plot(res) if plot else None
    log(f"sweep: {csv_path}, {md_path}" + (f", {png}" if png else ""))


# -- running it -------------------------------------------------------------------------------------
def _evaluate(sweep: Sweep, point: Point) -> dict[str, float]:
    """Evaluate a fitted point's best checkpoint as each of ``sweep.evals`` says that it has no results
    of yet; every evaluation writes ``results/<eval>.json`` into the run folder."""
    from gptkit import verbs

    cfg = load_config(sweep.recipe, [*point.overrides, "ckpt_path=best"])
    metrics: dict[str, float] = {}
    for kind in sweep.evals:
        if (found := point_results(point, [kind])) is not None:  # (e.g. test, when zeroshot is added)
            metrics.update(found)
        elif kind != "zeroshot":
            metrics.update(verbs.run(kind, cfg))
        else:
            metrics.update(_zeroshot(point, cfg))
    return metrics


def _zeroshot(point: Point, cfg: DictConfig) -> dict[str, float]:
    """Score the point's best checkpoint with ``gptkit.verbs.zeroshot``, which writes its
    ``results/zeroshot.json``."""
    from gptkit import verbs

    return verbs.zeroshot(cfg)


def run_sweep(sweep: Sweep, plot: bool = True) -> SweepResults:
    """Fit and evaluate every point that has no results yet, one after another, then write the
    sweep folder's table and plot. A point that fails with a user error (``GptkitError``) is
    reported and the sweep goes on; the failures are raised together at the end."""
    manifest = _read_manifest(sweep)
    for p in sweep.points:
        check_run_folder(sweep, p)
    make_folder(sweep.folder, "sweep folder")
    fitted: dict[str, dict] = dict((manifest or {}).get("fitted") or {})
    with _hold(sweep.folder):
        _write_manifest(sweep, fitted)
        from gptkit import verbs

        results: dict[str, dict[str, float]] = {}
        todo = []
        for p in sweep.points:
            found = point_results(p, sweep.evals)
            if found is not None:
                results[p.name] = found
            else:
                todo.append(p)
        log(f"sweep: {len(sweep.points)} points, {len(results)} with results, {len(todo)} to run; sweep folder "
            f"{sweep.folder}")
        if results:
            gather(sweep, results)  # checks --metric before anything trains
        failed: dict[str, str] = {}
        for i, p in enumerate(todo, 1):
            stamp = _stamp(_last(p))
            ended = stamp is not None and (fitted.get(p.name) == stamp or _evaluated(p))
            step = "evaluate" if ended else "resume" if stamp is not None else "fit"
            log(f"sweep [{i}/{len(todo)}] {p.name} ({p.label()}): {step}")
            started = time.perf_counter()
            try:
                if not ended:
                    verbs.run("fit", load_config(sweep.recipe, [*p.overrides, "ckpt_path=auto"]))
                    if (stamp := _stamp(_last(p))) is not None:
                        fitted[p.name] = stamp
                        _write_manifest(sweep, fitted)
                results[p.name] = _evaluate(sweep, p)
            except GptkitError as exc:
                if getattr(exc, "prefix", "error") != "error":  # preempted: stop the sweep, resumable
                    write_tables(gather(sweep, results, failed))
                    raise
                log(f"sweep: {p.name} failed: {exc}")
                failed[p.name] = str(exc)
                continue
            log(f"sweep [{i}/{len(todo)}] {p.name} done in {duration(time.perf_counter() - started)}")
            res = gather(sweep, results, failed)  # (checks --metric at the first point)
            write_tables(res)
        res = gather(sweep, results, failed)
        _write_outputs(res, plot)
    if failed:
        raise GptkitError(f"{len(failed)} of {len(sweep.points)} sweep points failed: "
                          + "; ".join(f"{name}: {msg}" for name, msg in failed.items())
                          + ". Fix the cause and run the same command again: finished points are kept")
    return res


def collect_sweep(sweep: Sweep, plot: bool = True) -> SweepResults:
    """Gather the results the points' runs have (from ``--print-commands`` run elsewhere, or a sweep
    still running) into the sweep folder's table and plot; trains nothing. Points without results
    are listed; none with results is an error."""
    manifest = _read_manifest(sweep)
    for p in sweep.points:
        check_run_folder(sweep, p)
    results = {p.name: found for p in sweep.points if (found := point_results(p, sweep.evals)) is not None}
    if not results:
        raise ConfigError(f"none of the {len(sweep.points)} sweep points has results yet ({'/'.join(sweep.evals)} in "
                          f"<run>/{RESULTS_DIR}/, e.g. {sweep.points[0].folder / RESULTS_DIR / (sweep.evals[0] + '.json')}); "
                          "run them first (the sweep itself, or its --print-commands)")
    res = gather(sweep, results)
    make_folder(sweep.folder, "sweep folder")
    if manifest is None:
        _write_manifest(sweep, {})
    if res.missing:
        log(f"sweep: {len(res.missing)} of {len(sweep.points)} points have no results yet: "
            + ", ".join(p.name for p in res.missing))
    _write_outputs(res, plot)
    return res
