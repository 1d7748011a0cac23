"""User mistakes on the command line: one clear message, a non-zero exit, no traceback, nothing
already written is touched. Most run ``gptkit.cli.main`` in-process (fast); argparse-level errors
exit with status 2 through ``SystemExit``."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, NEWS, QUICK, REPO, folder_snapshot

from gptkit.cli import build_parser, main
from gptkit.errors import ConfigError

RELEASE = FIXTURES / "openai_transformer" / "transformer_small.tar.gz"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A pretrained-model folder (model.safetensors, config.json, tokenizer.json) of a 1-layer model."""
    from gptkit.checkpoint import save_pretrained
    from gptkit.model import GPT, GPTConfig
    from gptkit.tokenizer import Tokenizer

    tok = Tokenizer.train([NEWS.read_text()[:5000]], vocab_size=200)
    config = GPTConfig(vocab_size=tok.vocab_size, n_ctx=16, n_layer=1, n_head=2, n_embd=16)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_pretrained(folder, GPT(config).state_dict(), config, tok.backend.to_str())
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """The small released-format (numpy) GPT-1: width 10, so --n-head must divide 10."""
    root = tmp_path_factory.mktemp("release")
    with tarfile.open(RELEASE) as tf:
        tf.extractall(root, filter="data")
    return next(p.parent for p in root.rglob("params_shapes.json"))


def _one_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


# -- 1. generate's sampling arguments ------------------------------------------------------------


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--num-samples", "0", "argument --num-samples: must be an integer >= 1, got 0"),
        ("--top-k", "-5", "argument --top-k: must be an integer >= 0 (0 keeps every token), got -5"),
        ("--temperature", "nan", "argument --temperature: must be a finite number >= 0"),
        ("--temperature", "inf", "argument --temperature: must be a finite number >= 0"),
        ("--temperature", "-1", "argument --temperature: must be a finite number >= 0"),
        ("--max-new-tokens", "-3", "argument --max-new-tokens: must be an integer >= 1, got -3"),
        ("--max-new-tokens", "0", "argument --max-new-tokens: must be an integer >= 1, got 0"),
        ("--top-k", "two", "argument --top-k: invalid integer 'two'"),
    ],
)
def test_generate_rejects_bad_sampling_arguments(capsys, option, value, message):
    err = _usage_error(capsys, ["generate", "model.ckpt", option, value])
    _one_error(err, message)
    assert "usage: gptkit generate" in err


def test_generate_accepts_the_special_values():
    args = build_parser().parse_args(["generate", "m", "--temperature", "0", "--top-k", "0", "--max-new-tokens", "1"])
    assert (args.temperature, args.top_k, args.max_new_tokens) == (0.0, 0, 1)


def test_generate_library_checks_sampling_settings(tiny_model):
    from gptkit.generate import generate

    for kwargs, message in [({"num_samples": 0}, "num_samples"), ({"top_k": -1}, "top_k"),
                            ({"temperature": float("nan")}, "temperature"), ({"max_new_tokens": 0}, "max_new_tokens")]:
        with pytest.raises(ConfigError, match=message):
            generate(str(tiny_model), **kwargs)
    assert len(generate(str(tiny_model), max_new_tokens=2, temperature=0, top_k=0, num_samples=2)) == 2


def test_generated_text_leaves_out_the_special_tokens(tiny_model, monkeypatch):
    """A fine-tuned model may sample _delimiter_ or _classify_: they mark input structure, not text."""
    from gptkit.generate import generate, load_for_generation
    from gptkit.model import GPT

    _, tok = load_for_generation(str(tiny_model))
    word = tok.encode("the")
    monkeypatch.setattr(GPT, "generate", lambda self, idx, n, **kw: torch.tensor(
        [[tok.start_id, *word, tok.delimiter_id, *word, tok.classify_id]]))
    assert generate(str(tiny_model), max_new_tokens=3) == [tok.decode([*word, *word])]


def test_generate_prints_prose_and_the_raw_tokens_one_flag_away(tiny_model, monkeypatch, capsys):
    """GPT-1 decodes to lower-cased tokens set apart (``trump ' s``, ``said . "``): `gptkit generate` joins
    them as prose; --raw prints them as decoded."""
    from gptkit.generate import load_for_generation
    from gptkit.model import GPT

    _, tok = load_for_generation(str(tiny_model))
    ids = tok.encode('Trump\'s plan, he said. "It\'s well-known, don\'t."')
    monkeypatch.setattr(GPT, "generate", lambda self, idx, n, **kw: torch.tensor([ids]))
    assert main(["generate", str(tiny_model)]) == 0
    assert capsys.readouterr().out == 'trump\'s plan, he said. "it\'s well-known, don\'t."\n'
    assert main(["generate", str(tiny_model), "--raw"]) == 0
    assert capsys.readouterr().out == 'trump \' s plan , he said . " it \' s well - known , don \' t . "\n'


# -- 2. a closed stdout ----------------------------------------------------------------------------


@pytest.mark.slow
def test_generate_into_a_closed_pipe_exits_quietly(tiny_model, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptkit.cli", "generate", str(tiny_model), "--num-samples", "3", "--max-new-tokens", "4"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**_env(), "PYTHONUNBUFFERED": "0"},
    )
    proc.stdout.close()  # `| head -1` that has already gone away
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141  # 128 + SIGPIPE, as a shell reports a program killed by it
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


# -- 3. an output folder that is a file ---------------------------------------------------------


def _fake_glue_run(folder: Path, task: str, metric: str, prediction: str) -> Path:
    (folder / "results").mkdir(parents=True)
    (folder / "predictions").mkdir()
    (folder / "config.yaml").write_text(f"data:\n  name: {task}\n")
    (folder / "results" / "test.json").write_text(json.dumps({metric: 0.5}))
    (folder / "predictions" / prediction).write_text(f"index\tprediction\n0\t{task}\n")
    return folder


def test_output_folder_that_is_a_file(capsys, tmp_path, tiny_model, release):
    sst2 = _fake_glue_run(tmp_path / "sst2", "sst2", "test/acc", "SST-2.tsv")
    target = tmp_path / "taken"
    target.write_text("keep me")
    commands = [
        ["glue", str(sst2), "--out", str(target)],
        ["export", str(tiny_model), str(target)],
        ["export", str(tiny_model), "--to", "gptkit", str(target)],
        ["import", "openai-gpt", "--from", str(release), "--n-head", "2", "--out", str(target)],
    ]
    for argv in commands:
        assert main(argv) == 2, argv
        _one_error(capsys.readouterr().err, f"{target} is an existing file, not a folder", "nothing was written")
    assert main(["export", str(tiny_model), str(target / "sub")]) == 2
    _one_error(capsys.readouterr().err, f"{target} is a file")
    assert target.read_text() == "keep me"


# -- 4. export / import into a folder that already holds files ----------------------------------


def test_export_refuses_a_non_empty_folder(capsys, tmp_path, tiny_model):
    run = tmp_path / "runs" / "sst2"
    run.mkdir(parents=True)
    (run / "tokenizer.json").write_text("the run's own tokenizer")
    (run / "config.yaml").write_text("data:\n  name: sst2\n")
    before = folder_snapshot(run, skip=())
    for to in ("gptkit", "hf"):
        assert main(["export", str(tiny_model), "--to", to, str(run)]) == 2
        _one_error(capsys.readouterr().err, f"{run} is not empty", "tokenizer.json", "--overwrite")
        assert folder_snapshot(run, skip=()) == before

    assert main(["export", str(tiny_model), "--to", "hf", str(tmp_path / "hf")]) == 0
    assert main(["export", str(tiny_model), "--to", "hf", str(tmp_path / "hf")]) == 2  # a second export too
    _one_error(capsys.readouterr().err, "is not empty")
    assert main(["export", str(tiny_model), "--to", "gptkit", "--overwrite", str(run)]) == 0
    assert (run / "model.safetensors").is_file() and (run / "config.yaml").read_text() == "data:\n  name: sst2\n"


def test_import_refuses_a_non_empty_folder(capsys, tmp_path, release):
    out = tmp_path / "gpt1"
    argv = ["import", "openai-gpt", "--from", str(release), "--n-head", "2", "--out", str(out)]
    assert main(argv) == 0
    before = folder_snapshot(out, skip=())
    assert main(argv + ["--fast-tokenizer"]) == 2
    _one_error(capsys.readouterr().err, f"{out} is not empty", "--overwrite")
    assert folder_snapshot(out, skip=()) == before
    assert main(argv + ["--fast-tokenizer", "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["tokenizer"]["exact"] is False


# -- 5. model shapes that cannot be built -------------------------------------------------------


def test_import_n_head_that_does_not_divide_the_width(capsys, tmp_path, release):
    out = tmp_path / "gpt1"
    assert main(["import", "openai-gpt", "--from", str(release), "--n-head", "3", "--out", str(out)]) == 2
    _one_error(capsys.readouterr().err, "n_head=3 does not divide the model width 10", "--n-head", "1, 2, 5, 10")
    assert not out.exists()
    err = _usage_error(capsys, ["import", "openai-gpt", "--from", str(release), "--n-head", "0"])
    _one_error(err, "argument --n-head: must be an integer >= 1, got 0")


def test_import_hf_folder_with_bad_head_count(capsys, tmp_path, tiny_model):
    hf = tmp_path / "hf"
    assert main(["export", str(tiny_model), "--to", "hf", str(hf)]) == 0
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "n_head": 3}))  # width 16
    assert main(["import", "openai-gpt", "--from", str(hf), "--out", str(tmp_path / "out")]) == 2
    _one_error(capsys.readouterr().err, "config.json", "n_head=3", "not a valid model shape")


# -- 6. misleading messages ---------------------------------------------------------------------


def test_overrides_after_print_config(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", QUICK, "trainer.max_steps=5", "--print-config", "run.name=x", "trainer.max_steps=9"]) == 0
    out = capsys.readouterr().out
    assert "name: x" in out and "max_steps: 9" in out
    err = _usage_error(capsys, ["fit", QUICK, "--print-config", "--bogus"])
    _one_error(err, "gptkit fit: error: unrecognized arguments: --bogus")
    assert "usage: gptkit fit" in err


def test_validate_without_arguments_names_only_the_recipe(capsys):
    err = _usage_error(capsys, ["validate"])
    _one_error(err, "the following arguments are required: recipe")
    assert "required: recipe," not in err


def test_recipe_that_is_a_directory(capsys):
    assert main(["fit", str(REPO / "recipes" / "quickstart"), "trainer.max_steps=1"]) == 2
    _one_error(capsys.readouterr().err, "is a directory, not a recipe file", "pretrain.yaml")


# -- 7. a submission folder holds only this submission ------------------------------------------


def test_glue_refuses_stale_files_in_the_submission_folder(capsys, tmp_path):
    sst2 = _fake_glue_run(tmp_path / "sst2", "sst2", "test/acc", "SST-2.tsv")
    cola = _fake_glue_run(tmp_path / "cola", "cola", "test/mcc", "CoLA.tsv")
    sub = tmp_path / "submission"
    assert main(["glue", str(sst2), str(cola), "--out", str(sub)]) == 0
    assert main(["glue", str(sst2), str(cola), "--out", str(sub)]) == 0  # the same submission again: fine
    assert sorted(p.name for p in sub.iterdir()) == ["CoLA.tsv", "SST-2.tsv", "glue_score.txt"]
    capsys.readouterr()
    before = folder_snapshot(sub, skip=())
    assert main(["glue", str(sst2), "--out", str(sub)]) == 2  # CoLA.tsv would be uploaded with it
    _one_error(capsys.readouterr().err, f"{sub} already holds CoLA.tsv", "earlier submission")
    assert folder_snapshot(sub, skip=()) == before


def test_a_file_where_a_folder_belongs_is_one_message(tmp_path, capsys):
    """The file system's refusals (a file where a folder belongs, no permission, a name too long) end in
    one message naming the path, not a traceback."""
    (tmp_path / "afile").write_text("")
    code = main(["fit", str(REPO / "recipes" / "quickstart" / "pretrain.yaml"), f"run.data_dir={tmp_path / 'afile'}",
                 f"run.dir={tmp_path / 'runs'}", "data.corpus=null", f"data.files=[{NEWS}]", "model.n_layer=1",
                 "model.n_embd=16", "model.n_head=2", "model.n_ctx=16", "tokenizer.vocab_size=300",
                 "trainer.max_steps=1", "logging.progress=none"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert f"cannot use {tmp_path / 'afile'}" in line and "Not a directory" in line


def test_an_os_error_without_a_path_is_not_blamed_on_the_paths(monkeypatch, capsys):
    """A refused connection (an OSError with no file name) is named as what it is, without advice about paths."""
    import gptkit.verbs

    def refused(verb, cfg):
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(gptkit.verbs, "run", refused)
    code = main(["fit", str(REPO / "recipes" / "quickstart" / "pretrain.yaml")])
    err = capsys.readouterr().err
    assert code == 1 and err == "error: ConnectionRefusedError: [Errno 111] Connection refused\n"
