"""Bad input everywhere: malformed recipes, corpora, checkpoints and task files through the real CLI.

Each case writes some files, runs ``gptkit.cli.main`` in-process and expects exactly one ``error:``
line containing a given text, exit status 2, no traceback and no hang. To cover a new kind of bad
input, add a row to ``CASES`` (or ``TASK_CASES`` for a fine-tuning task's files).
"""

import json
import os
import random
import signal
from contextlib import contextmanager

import pytest
from conftest import NEWS, ONE_STEP, QUICK

from gptkit.cli import main
from gptkit.tasks import get_task

rng = random.Random(0)
GARBAGE = bytes(rng.randrange(256) for _ in range(4000))
TEXT = NEWS.read_text()[:3000]


def corpus(name, content):
    """(files, recipe, overrides) of a case training on one corpus file with the quickstart recipe."""
    return {name: content}, None, ["data.corpus=null", f"data.files=[{name}]", *ONE_STEP]


# (id, files to write, recipe (None: the quickstart), overrides, text the error must contain)
CASES = [
    # -- recipes
    ("missing-recipe", {}, "nope.yaml", [], "recipe nope.yaml does not exist"),
    ("binary-recipe", {"r.yaml": GARBAGE}, "r.yaml", [], "is not valid YAML"),
    ("recipe-is-a-list", {"r.yaml": "- a\n- b\n"}, "r.yaml", [], "must be a mapping of keys, got list"),
    ("recipe-unknown-key", {"r.yaml": "modle:\n  n_layer: 2\n"}, "r.yaml", [], "did you mean 'model'"),
    ("recipe-section-scalar", {"r.yaml": "model: 3\n"}, "r.yaml", [], "r.yaml must be a mapping of keys, got 3"),
    ("recipe-python-tag", {"r.yaml": "run: !!python/object/apply:os.system ['touch pwned']\n"}, "r.yaml", [],
     "is not valid YAML"),
    ("recipe-alias-bomb", {"r.yaml": "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))},
     "r.yaml", [], "is not valid YAML"),
    ("recipe-bad-interpolation", {"r.yaml": "run:\n  name: ${nope:x}\n"}, "r.yaml", [], "run.name"),
    ("recipe-missing-base", {"r.yaml": "base: gone.yaml\n"}, "r.yaml", [], "gone.yaml (extended by"),
    ("recipe-self-base", {"r.yaml": "base: r.yaml\n"}, "r.yaml", [], "extends itself"),
    ("recipe-empty", {"r.yaml": ""}, "r.yaml", [], "no pretraining text given"),
    ("recipe-invalid-utf8", {"r.yaml": b"run:\n  name: \xff\xfe\n"}, "r.yaml", [], "r.yaml"),
    # -- overrides
    ("override-no-equals", {}, None, ["trainer.max_steps"], "is not of the form key=value"),
    ("override-wrong-type", {}, None, ["trainer.max_steps=ten"], "invalid value for 'trainer.max_steps'"),
    ("override-negative", {}, None, ["data.batch_size=-1"], "'data.batch_size' must be positive"),
    ("override-heads", {}, None, ["model.n_head=5"], "must be divisible by model.n_head"),
    ("override-choice", {}, None, ["optim.schedule=wavy"], "choose one of cosine, linear, constant"),
    ("override-val-fraction", {}, None, ["data.val_fraction=2"], "data.val_fraction must be between 0 and 1"),
    ("override-unknown", {}, None, ["optim.learning_rate=1"], "unknown key 'optim.learning_rate'"),
    ("override-nonfinite", {}, None, ["objective.nonfinite=ignore"], "choose one of stop, skip"),
    ("trainer-bad-devices", *corpus("a.txt", TEXT), "should be an int > 0"),
    ("trainer-bad-precision", *corpus("a.txt", TEXT), "could not set up the trainer with these trainer.* settings"),
    ("trainer-bad-strategy", *corpus("a.txt", TEXT), "could not set up the trainer with these trainer.* settings"),
    ("trainer-negative-steps", *corpus("a.txt", TEXT), "trainer.* settings (accelerator, devices, strategy, precision, ...): `max_steps` must be a non-negative"),
    ("init-missing", *corpus("a.txt", TEXT), "init.checkpoint nope/last.ckpt does not exist; give a gptkit .ckpt"),
    # -- corpora
    ("corpus-binary", *corpus("g.txt", GARBAGE), "g.txt:1: not UTF-8 text (byte 0"),
    ("corpus-invalid-utf8-late", *corpus("u.txt", TEXT.encode() + b"\xc3\x28 tail"), "u.txt:3: not UTF-8 text (byte 3000"),
    ("corpus-utf16", *corpus("w.txt", TEXT[:500].encode("utf-16")), "w.txt:1: not UTF-8 text"),
    ("corpus-empty", *corpus("e.txt", ""), "empty"),
    ("corpus-whitespace", *corpus("s.txt", " \n\t\n" * 500), "empty"),
    ("corpus-too-small", *corpus("t.txt", "a few words only"), "too few to fill one training"),
    ("corpus-jsonl-truncated", *corpus("c.jsonl", '{"text": "ok"}\n{"text": "cut he'), "c.jsonl:2: not valid JSON"),
    ("corpus-jsonl-array", *corpus("c.jsonl", '["text"]\n'), "c.jsonl:1: expected a JSON object"),
    ("corpus-jsonl-number", *corpus("c.jsonl", '{"text": 42}\n'), "with a string field 'text'"),
    ("corpus-json-pretty", *corpus("c.json", json.dumps({"text": TEXT}, indent=2)), "c.json:1: not valid JSON"),
    ("corpus-csv-no-column", *corpus("c.csv", "id,body\n1,hello\n"), "no column 'text'"),
    ("corpus-csv-nul", *corpus("c.csv", "text\nhello\x00world\n"), "tokens, too few"),
    ("corpus-csv-open-quote", *corpus("c.csv", 'text\n"never closed\n' + "x " * 100), "malformed CSV (unexpected end of data)"),
    ("corpus-csv-binary", *corpus("c.csv", GARBAGE), "c.csv"),
    ("corpus-is-directory", {"d/x.txt": "x"}, None, ["data.corpus=null", "data.files=[d]"], "is a directory"),
    ("corpus-glob-nothing", {}, None, ["data.corpus=null", "data.files=['*.nothing']"], "matches no file"),
    ("override-yaml-alias", {}, None, ["data.corpus=null", "data.files=[*.nothing]"], "quote values"),
    ("corpus-unknown-catalogue", {}, None, ["data.corpus=nwes"], "did you mean 'news'"),
    # -- tokenizers and checkpoints
    ("tokenizer-garbage", {"a.txt": TEXT, "tok.json": GARBAGE}, None,
     ["data.corpus=null", "data.files=[a.txt]", "tokenizer.path=tok.json", *ONE_STEP], "tok.json"),
    ("tokenizer-wrong-json", {"a.txt": TEXT, "tok.json": '{"a": 1}'}, None,
     ["data.corpus=null", "data.files=[a.txt]", "tokenizer.path=tok.json", *ONE_STEP], "tok.json"),
    ("ckpt-missing", *corpus("a.txt", TEXT), "ckpt_path gone.ckpt does not exist"),
    ("ckpt-garbage", {"a.txt": TEXT, "g.ckpt": GARBAGE}, None,
     ["data.corpus=null", "data.files=[a.txt]", "ckpt_path=g.ckpt", *ONE_STEP], "not a loadable checkpoint"),
    ("ckpt-empty", {"a.txt": TEXT, "g.ckpt": b""}, None,
     ["data.corpus=null", "data.files=[a.txt]", "ckpt_path=g.ckpt", *ONE_STEP], "not a loadable checkpoint"),
    ("init-garbage", {"a.txt": TEXT, "g.ckpt": GARBAGE}, None,
     ["data.corpus=null", "data.files=[a.txt]", "init.checkpoint=g.ckpt", *ONE_STEP], "not a loadable checkpoint"),
    ("init-folder-empty", {"a.txt": TEXT, "m/README": "x"}, None,
     ["data.corpus=null", "data.files=[a.txt]", "init.checkpoint=m", *ONE_STEP], "is not a pretrained-model folder"),
    ("validate-without-ckpt", *corpus("a.txt", TEXT), "needs a checkpoint"),
]
# per-case extra overrides, appended after the shared ones
EXTRA = {
    "trainer-bad-devices": ["trainer.devices=abc"],
    "trainer-bad-precision": ["trainer.precision=17"],
    "trainer-bad-strategy": ["trainer.strategy=nonsense"],
    "trainer-negative-steps": ["trainer.max_steps=-5"],
    "init-missing": ["init.checkpoint=nope/last.ckpt"],
    "ckpt-missing": ["ckpt_path=gone.ckpt"],
}
VERB = {"validate-without-ckpt": "validate"}

# Fine-tuning task files: (id, task name, files under data.root, text the error must contain).
TASK_CASES = [
    ("sst2-wrong-columns", "sst2", {"train.tsv": "a\tb\n1\t2\n", "dev.tsv": "a\tb\n1\t2\n"}, "sst2"),
    ("sst2-bad-label", "sst2", {"train.tsv": "sentence\tlabel\ngood\tmaybe\n",
                                "dev.tsv": "sentence\tlabel\ngood\t1\n"}, "label"),
    ("sst2-binary", "sst2", {"train.tsv": GARBAGE, "dev.tsv": GARBAGE}, "sst2"),
    ("rocstories-truncated", "rocstories", {"val.csv": "InputStoryid,InputSentence1\n\"cut"}, "rocstories"),
    ("race-truncated-json", "race", {"train/middle/1.txt": '{"article": "x", "questions": ['}, "race"),
    ("copa-bad-xml", "copa", {"copa-dev.xml": "<copa-corpus><item id='1'"}, "copa"),
    ("sst2-missing-root", "sst2", {}, "sst2"),
]


@contextmanager
def deadline(seconds):
    def hang(signum, frame):
        raise TimeoutError(f"no answer within {seconds}s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def write_files(root, files):
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def run_case(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with deadline(60):
        code = main(argv)
    err = capsys.readouterr().err
    return code, err


def check_error(code, err, expected):
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert expected in errors[0], errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_input_gives_one_clear_error(case, tmp_path, monkeypatch, capsys):
    name, files, recipe, overrides, expected = case
    write_files(tmp_path, files)
    if recipe is not None and (tmp_path / recipe).exists():
        recipe = str(tmp_path / recipe)
    run = ["run.dir=runs", "run.data_dir=cache"]
    argv = [VERB.get(name, "fit"), recipe or QUICK, *run, *overrides, *EXTRA.get(name, [])]
    code, err = run_case(tmp_path, monkeypatch, capsys, argv)
    check_error(code, err, expected)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_malformed_task_files_give_one_clear_error(case, tmp_path, monkeypatch, capsys):
    name, task, files, expected = case
    get_task(task)  # a registered task: else "unknown task 'sst2'" would also contain `expected`
    write_files(tmp_path / "task", files)
    tok = tmp_path / "tok.json"
    from gptkit.tokenizer import Tokenizer

    Tokenizer.train([TEXT], vocab_size=300).save(tok)
    argv = ["fit", QUICK, "run.dir=runs", "run.data_dir=cache", f"data.name={task}", f"data.root={tmp_path / 'task'}",
            f"tokenizer.path={tok}", *ONE_STEP]
    code, err = run_case(tmp_path, monkeypatch, capsys, argv)
    check_error(code, err, expected)


@pytest.mark.parametrize("content", [
    pytest.param(("word " * 200_000).replace(" ", "", 100_000), id="huge-line"),
    pytest.param(TEXT.replace("e", "\u00e9\u0000\u200b"), id="odd-characters"),
], )
def test_nasty_but_valid_text_trains(content, tmp_path, monkeypatch, capsys):
    files, _, overrides = corpus("n.txt", content)
    write_files(tmp_path, files)
    code, err = run_case(tmp_path, monkeypatch, capsys, ["fit", QUICK, "run.dir=runs", "run.data_dir=cache",
                                                         *overrides])
    assert code == 0, err[-2000:]
    assert os.path.isfile(tmp_path / "runs" / "quickstart-pretrain" / "checkpoints" / "last.ckpt")
