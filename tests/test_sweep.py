"""`gptkit sweep`: the grid syntax, a tiny fine-tuning sweep's table and plot, restarting (a rerun
trains nothing, an interrupted point resumes, a fitted point is only evaluated), --print-commands,
--collect, and the refusals (a bad grid value, another sweep's folder or run folders)."""

from __future__ import annotations

import csv
import fcntl
import json
import shlex
import sys
from pathlib import Path

import pytest
from conftest import QUICK, REPO, folder_snapshot, run_cli
from finetune_helpers import SAMPLES, tiny_tokenizer
from fit_helpers import Record

import gptkit.verbs as verbs
from gptkit.checkpoint import CheckpointInfo
from gptkit.cli import main
from gptkit.errors import ConfigError, GptkitError
from gptkit.sweep import (
    collect_sweep,
    parse_grid,
    plan_sweep,
    point_results,
    run_sweep,
    split_values,
)

FINETUNE = str(REPO / "recipes" / "quickstart" / "finetune.yaml")
GRID = ["objective.lm_coef=0,0.5", "run.seed=1,2"]


def tiny(root, *extra):
    """The quickstart fine-tuning recipe on the fixture's 300 movie reviews, from scratch, with a
    2-layer, 32-wide model: one epoch is 30 updates, under a second."""
    return [f"data.root={SAMPLES / 'movie_reviews'}", f"tokenizer.path={root / 'tok.json'}", "init.checkpoint=null",
            "model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.n_ctx=64", "data.batch_size=8",
            "trainer.max_epochs=1", "trainer.log_every_n_steps=5", "trainer.accelerator=cpu", "trainer.devices=1",
            "logging.progress=none", "logging.throughput=false", f"run.dir={root / 'runs'}", *extra]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    tiny_tokenizer().save(root / "tok.json")
    return root


@pytest.fixture
def calls(monkeypatch):
    """Every ``gptkit.verbs.run`` the sweep makes, as ``(verb, run.name, ckpt_path)``."""
    seen, real = [], verbs.run

    def counting(verb, cfg, callbacks=()):
        seen.append((verb, cfg.run.name, cfg.ckpt_path))
        return real(verb, cfg, callbacks)

    monkeypatch.setattr(verbs, "run", counting)
    return seen


@pytest.fixture(scope="module")
def swept(root):
    """The tiny 2 x 2 sweep (lm_coef x seed), run once for the tests that read it."""
    sweep = plan_sweep(FINETUNE, tiny(root, *GRID))
    return sweep, run_sweep(sweep)


# -- the grid ---------------------------------------------------------------------------------------
def test_values_split_at_commas_outside_brackets_and_quotes():
    assert split_values("0,1,2") == ["0", "1", "2"]
    assert split_values("1e-4") == ["1e-4"]
    assert split_values("[a.txt,b.txt],[c.txt]") == ["[a.txt,b.txt]", "[c.txt]"]
    assert split_values("{a: 1, b: 2},{a: 3}") == ["{a: 1, b: 2}", "{a: 3}"]
    assert split_values("'a,b'") == ["'a,b'"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    assert split_values("it's,fine") == ["it's", "fine"]  # an apostrophe inside a word opens no quote
    for bad in ("[a,b", "a]", "'a,b"):
        with pytest.raises(ValueError):
            split_values(bad)


def test_grid_separates_swept_keys_from_fixed_overrides():
    fixed, grid = parse_grid(["optim.lr=1e-3", "init.n_transfer=0,1,2", "data.files=[a,b]", "optim.lr=1e-4,3e-4",
                              "run.name=abl", "trainer.max_epochs=1", "trainer.max_epochs=2"])
    # a fixed value given again replaces the earlier one, as in `gptkit fit`; a swept key replaces it too
    assert fixed == ["data.files=[a,b]", "run.name=abl", "trainer.max_epochs=1", "trainer.max_epochs=2"]
    assert grid == [("init.n_transfer", ["0", "1", "2"]), ("optim.lr", ["1e-4", "3e-4"])]


@pytest.mark.parametrize("args, message", [
    (["init.n_transfer=0,,2"], "grid key init.n_transfer has an empty value"),
    (["run.seed=1,1"], "grid key run.seed repeats the value 1"),
    (["run.name=a,b"], "run.name cannot be swept"),
    (["run.seed=1,2", "ckpt_path=last"], "a sweep sets ckpt_path itself"),
    (["run.seed=1,2", "run.seed=3"], "run.seed is given twice"),
    (["run.seed=1,2", "run.seed=3,4"], "run.seed is given twice"),
    (["data.files=[a,b"], "a bracket is left open"),
    (["n_transfer"], "is not of the form key=value"),
])
def test_bad_grids_are_one_clear_error(args, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(args)


def test_a_value_that_does_not_parse_for_its_key_names_key_and_value(root):
    with pytest.raises(ConfigError) as err:
        plan_sweep(FINETUNE, tiny(root, "init.n_transfer=1,a"))
    assert str(err.value).startswith("grid value init.n_transfer=a: invalid value for 'init.n_transfer'")
    assert "nothing was run" in str(err.value)
    with pytest.raises(ConfigError, match=r"grid value optim\.lrr=1: unknown key 'optim\.lrr'.*did you mean 'optim\.lr'"):
        plan_sweep(FINETUNE, tiny(root, "optim.lrr=1,2"))
    with pytest.raises(ConfigError, match=r"grid point model\.n_embd=30, model\.n_head=4: model\.n_embd \(30\) must be "
                                          "divisible by model.n_head"):
        plan_sweep(FINETUNE, tiny(root, "model.n_embd=30,32", "model.n_head=2,4"))
    with pytest.raises(ConfigError, match="a sweep needs at least one swept key"):
        plan_sweep(FINETUNE, tiny(root))
    with pytest.raises(ConfigError, match="--eval test needs a fine-tuning recipe"):
        plan_sweep(QUICK, ["run.seed=1,2"])
    with pytest.raises(ConfigError, match="--eval tests: choose one or more of test, validate, zeroshot"):
        plan_sweep(FINETUNE, tiny(root, *GRID), evals="tests")
    with pytest.raises(ConfigError, match="would share the run folder name quickstart-finetune-files=a.txt"):
        plan_sweep(FINETUNE, tiny(root, "data.files=[a.txt],a.txt"))


def test_points_are_ordinary_named_runs(root, tmp_path):
    sweep = plan_sweep(QUICK, ["data.files=[a.txt,b.txt],[c.txt]", "optim.lr=1e-4,3e-4", f"run.dir={tmp_path}"],
                       evals="validate")
    assert [p.name for p in sweep.points] == [
        "quickstart-pretrain-files=a.txt_b.txt-lr=1e-4", "quickstart-pretrain-files=a.txt_b.txt-lr=3e-4",
        "quickstart-pretrain-files=c.txt-lr=1e-4", "quickstart-pretrain-files=c.txt-lr=3e-4"]
    assert list(sweep.points[0].cfg.data.files) == ["a.txt", "b.txt"] and sweep.points[3].cfg.optim.lr == 3e-4
    assert sweep.folder == tmp_path / "sweep-quickstart-pretrain" and sweep.metric == "val/loss"
    assert sweep.points[0].folder == tmp_path / "quickstart-pretrain-files=a.txt_b.txt-lr=1e-4"
    named = plan_sweep(FINETUNE, tiny(root, "run.name=abl", *GRID), out=str(tmp_path / "elsewhere"))
    assert named.points[0].name == "abl-lm_coef=0-seed=1" and named.folder == tmp_path / "elsewhere"
    assert named.metric == "test/acc"  # checkpoint.monitor val/acc, as the test split names it


def test_print_commands_are_one_restartable_shell_line_per_point(root, capsys, tmp_path):
    args = tiny(root, f"run.dir={tmp_path}", "data.files=[x,y]", *GRID)
    assert main(["sweep", FINETUNE, *args, "--print-commands", "--eval", "test,zeroshot"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    fit, test, zeroshot = (shlex.split(part) for part in lines[0].split(" && "))
    point = [*args[:-2], "objective.lm_coef=0", "run.seed=1", "run.name=quickstart-finetune-lm_coef=0-seed=1"]
    assert fit == ["gptkit", "fit", FINETUNE, *point, "ckpt_path=auto"]
    assert test == ["gptkit", "test", FINETUNE, *point, "ckpt_path=best"]
    assert zeroshot == ["gptkit", "zeroshot", FINETUNE, *point, "ckpt_path=best"]
    assert "'data.files=[x,y]'" in lines[0]  # quoted for the shell
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_bad_grid_value_on_the_command_line_is_one_message(root, capsys):
    assert main(["sweep", FINETUNE, *tiny(root, "init.n_transfer=a,b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: grid value init.n_transfer=a: ") and len(err.splitlines()) == 1


# -- running it -------------------------------------------------------------------------------------
def test_sweep_writes_csv_table_and_plot(swept):
    sweep, res = swept
    assert [status for _, status, _ in res.points] == ["done"] * 4
    rows = list(csv.DictReader((sweep.folder / "sweep.csv").open()))
    assert [(r["objective.lm_coef"], r["run.seed"]) for r in rows] == [("0", "1"), ("0", "2"), ("0.5", "1"), ("0.5", "2")]
    assert rows[0]["run"] == str(sweep.points[0].folder) and rows[0]["status"] == "done"
    assert 0 <= float(rows[0]["test/acc"]) <= 1 and float(rows[0]["test/loss"]) > 0
    table = (sweep.folder / "sweep.md").read_text()
    assert "| objective.lm_coef | **test/acc** | n | test/loss |" in table
    accs = [float(r["test/acc"]) for r in rows[:2]]
    mean = sum(accs) / 2
    assert f"| 0 | {mean:.4g} ± " in table and " | 2 | " in table
    assert (sweep.folder / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((sweep.folder / "sweep.json").read_text())
    assert manifest["sweep"]["grid"] == [["objective.lm_coef", ["0", "0.5"]], ["run.seed", ["1", "2"]]]
    assert sorted(manifest["fitted"]) == sorted(p.name for p in sweep.points)
    assert [name for name, _ in res.lines()] == ["test/acc[objective.lm_coef=0]", "test/acc[objective.lm_coef=0.5]"]
    assert res.lines()[0][1] == pytest.approx(mean)


def test_a_rerun_trains_nothing(swept, calls):
    sweep, _ = swept
    before = {p.name: (p.folder / "checkpoints" / "last.ckpt").stat().st_mtime_ns for p in sweep.points}
    runs = folder_snapshot(sweep.folder.parent, skip=("tensorboard", sweep.folder.name))
    res = run_sweep(plan_sweep(FINETUNE, tiny(sweep.folder.parent.parent, *GRID)))
    assert calls == []
    assert {p.name: (p.folder / "checkpoints" / "last.ckpt").stat().st_mtime_ns for p in sweep.points} == before
    assert folder_snapshot(sweep.folder.parent, skip=("tensorboard", sweep.folder.name)) == runs
    assert [status for _, status, _ in res.points] == ["done"] * 4


def test_a_fitted_point_without_results_is_only_evaluated(root, calls):
    grid = ["run.name=evalonly", "objective.lm_coef=0,0.5"]
    sweep = run_sweep(plan_sweep(FINETUNE, tiny(root, *grid))).sweep
    (sweep.points[1].folder / "results" / "test.json").unlink()
    calls.clear()
    run_sweep(plan_sweep(FINETUNE, tiny(root, *grid)))
    assert calls == [("test", "evalonly-lm_coef=0.5", "best")]


def test_an_interrupted_point_resumes(root, calls, monkeypatch, capsys):
    args = tiny(root, "run.name=crash", "checkpoint.every_n_train_steps=5", "objective.lm_coef=0,0.5")
    real = verbs.run

    def crash_first_fit(verb, cfg, callbacks=()):
        stop = [Record(stop_at=10)] if verb == "fit" and not (root / "runs" / "crash-lm_coef=0").exists() else []
        return real(verb, cfg, [*callbacks, *stop])

    monkeypatch.setattr(verbs, "run", crash_first_fit)
    with pytest.raises(RuntimeError, match="simulated node failure"):
        run_sweep(plan_sweep(FINETUNE, args))
    first = root / "runs" / "crash-lm_coef=0"
    stopped = CheckpointInfo.read(first / "checkpoints" / "last.ckpt").step
    assert 0 < stopped < 30 and not (first / "results").exists()
    assert not (root / "runs" / "crash-lm_coef=0.5").exists()  # the sweep stopped there
    capsys.readouterr()

    calls.clear()
    monkeypatch.setattr(verbs, "run", real)  # (the counting one of the calls fixture)
    res = run_sweep(plan_sweep(FINETUNE, args))
    err = capsys.readouterr().err
    assert "crash-lm_coef=0 (objective.lm_coef=0): resume" in err
    assert f"done: {30 - stopped} updates ({stopped} to 30)" in err  # resumed, not started again
    assert [c[0] for c in calls] == ["fit", "test", "fit", "test"] and calls[0][2] == "auto"
    assert [status for _, status, _ in res.points] == ["done", "done"]


def test_collect_gathers_finished_points_and_reports_the_others(swept, calls, capsys, tmp_path):
    sweep, _ = swept
    root = sweep.folder.parent.parent
    grid = ["objective.lm_coef=0,0.5,1", "run.seed=1,2"]  # lm_coef=1 has not run
    res = collect_sweep(plan_sweep(FINETUNE, tiny(root, *grid), out=str(tmp_path / "collected")))
    assert calls == []
    assert [status for _, status, _ in res.points] == ["done"] * 4 + ["no results"] * 2
    assert "2 of 6 points have no results yet: quickstart-finetune-lm_coef=1-seed=1" in capsys.readouterr().err
    table = (tmp_path / "collected" / "sweep.md").read_text()
    assert "| 1 | – | 0 |" in table and "No results yet for 2 of 6 points" in table
    assert (tmp_path / "collected" / "sweep.png").is_file()
    with pytest.raises(ConfigError, match="none of the 2 sweep points has results yet"):
        collect_sweep(plan_sweep(FINETUNE, tiny(root, "objective.lm_coef=2,3"), out=str(tmp_path / "none")))
    assert not (tmp_path / "none").exists()
    with pytest.raises(ConfigError, match="--metric test/f1: the points' results \\(test\\) hold test/acc, test/loss"):
        collect_sweep(plan_sweep(FINETUNE, tiny(root, *GRID), metric="test/f1", out=str(tmp_path / "f1")))


def test_without_matplotlib_the_tables_are_still_written(swept, monkeypatch, capsys, tmp_path):
    sweep, _ = swept
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    collect_sweep(plan_sweep(FINETUNE, tiny(sweep.folder.parent.parent, *GRID), out=str(tmp_path / "noplot")))
    assert "no plot: matplotlib is not installed (pip install 'gptkit[plot]')" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "noplot").iterdir()) == ["sweep.csv", "sweep.json", "sweep.md"]


def test_zeroshot_evaluation_through_the_verb(swept, calls, monkeypatch, tmp_path):
    sweep, _ = swept
    root = sweep.folder.parent.parent
    scored = []

    def zeroshot(cfg):  # a stand-in for gptkit.verbs.zeroshot: cfg -> metrics, written to results/zeroshot.json
        from gptkit.outputs import write_results

        scored.append((cfg.run.name, cfg.ckpt_path))
        metrics = {"zeroshot/polarity/acc": 0.5 + cfg.objective.lm_coef / 10}
        folder = Path(cfg.run.dir) / cfg.run.name
        best = next((folder / "checkpoints").glob("best-*.ckpt"))
        write_results(folder, "zeroshot", metrics, best, CheckpointInfo.read(best).step)
        return metrics

    monkeypatch.setattr(verbs, "zeroshot", zeroshot, raising=False)
    res = run_sweep(plan_sweep(FINETUNE, tiny(root, *GRID), evals="test,zeroshot", metric="zeroshot/polarity/acc",
                               out=str(tmp_path / "z")))
    assert calls == []  # fitted and tested already: only the zero-shot scores are new
    assert sorted(scored) == sorted((p.name, "best") for p in sweep.points)
    assert res.lines() == [("zeroshot/polarity/acc[objective.lm_coef=0]", pytest.approx(0.5)),
                           ("zeroshot/polarity/acc[objective.lm_coef=0.5]", pytest.approx(0.55))]
    assert point_results(sweep.points[0], ["zeroshot"]) == {"zeroshot/polarity/acc": 0.5}  # written for it
    assert "| objective.lm_coef | **zeroshot/polarity/acc** | n | test/acc | test/loss |" in (
        tmp_path / "z" / "sweep.md").read_text()


# -- refusals ---------------------------------------------------------------------------------------
def test_a_folder_holding_another_sweeps_results_is_refused(swept, calls, tmp_path):
    sweep, _ = swept
    root = sweep.folder.parent.parent
    before = folder_snapshot(sweep.folder)
    with pytest.raises(ConfigError) as err:
        run_sweep(plan_sweep(FINETUNE, tiny(root, "objective.lm_coef=0,0.5", "run.seed=1,3")))
    assert f"sweep folder {sweep.folder} holds another sweep's results (grid: " in str(err.value)
    assert "pass a new folder with --out" in str(err.value) and "nothing was written" in str(err.value)
    with pytest.raises(ConfigError, match="holds another sweep's results"):
        collect_sweep(plan_sweep(FINETUNE, tiny(root, "objective.lm_coef=0,0.5", "run.seed=1,3")))
    assert folder_snapshot(sweep.folder) == before and calls == []

    other = tmp_path / "notes"
    other.mkdir()
    (other / "plan.txt").write_text("mine")
    with pytest.raises(GptkitError, match="already holds plan.txt, which this command would not write"):
        run_sweep(plan_sweep(FINETUNE, tiny(root, *GRID), out=str(other)))
    assert [p.name for p in other.iterdir()] == ["plan.txt"]


def test_display_only_overrides_do_not_make_another_sweep(swept, calls):
    sweep, _ = swept
    again = run_sweep(plan_sweep(FINETUNE, [*tiny(sweep.folder.parent.parent, *GRID), "logging.progress=plain"]))
    assert calls == [] and len(again.lines()) == 2  # the same sweep: nothing trained, the results read


def test_one_sweep_at_a_time_in_a_sweep_folder(swept, calls):
    sweep, _ = swept
    with open(sweep.folder / ".lock", "a") as held:  # as a sweep that is running holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="is in use by another `gptkit sweep` that has not ended"):
            run_sweep(plan_sweep(FINETUNE, tiny(sweep.folder.parent.parent, *GRID)))
    assert calls == []


def test_run_folders_of_another_sweep_are_not_resumed(swept, calls, tmp_path):
    sweep, _ = swept
    root = sweep.folder.parent.parent
    before = folder_snapshot(sweep.points[0].folder)
    changed = plan_sweep(FINETUNE, tiny(root, "optim.lr=1e-3", *GRID), out=str(tmp_path / "lr"))
    with pytest.raises(ConfigError, match=r"holds a run made with other settings \(optim.lr=0.0001 there, 0.001 here\)"):
        run_sweep(changed)
    assert calls == [] and not (tmp_path / "lr").exists()
    assert folder_snapshot(sweep.points[0].folder) == before


@pytest.mark.slow
def test_the_sweep_command_end_to_end(root, tmp_path):
    args = ["sweep", FINETUNE, *tiny(tmp_path, "run.name=cli"), "objective.lm_coef=0,0.5", "--metric", "test/loss"]
    tiny_tokenizer().save(tmp_path / "tok.json")
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["test/loss[objective.lm_coef=0]", "test/loss[objective.lm_coef=0.5]"]
    assert all(float(line.split("\t")[1]) > 0 for line in lines)
    assert {p.name for p in (tmp_path / "runs" / "sweep-cli").iterdir()} >= {"sweep.csv", "sweep.md", "sweep.png"}
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == out.stdout
    assert "2 with results, 0 to run" in again.stderr and "done:" not in again.stderr
