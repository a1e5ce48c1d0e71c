"""The `instructerc` command: one subcommand per stage, each living in its own module.

A stage module exposes `add_arguments(parser)` and `run(args) -> int`; it is imported only
when its subcommand runs, so `instructerc prepare` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from instructerc import __version__
from instructerc.errors import Stopped, UserError

# subcommand -> (module, one-line help)
COMMANDS = {
    "prepare": ("instructerc.prepare", "turn an ERC dataset into instruction records (JSONL)"),
    "train": ("instructerc.train", "LoRA fine-tuning: --stage speaker | joint | plain"),
    "eval": ("instructerc.evaluate", "score a model (+adapter) on a prepared split"),
    "infer": ("instructerc.evaluate", "the same command as eval (the design's name for the decoding step)"),
    "baseline": ("instructerc.baselines", "score the majority-class or kNN-demonstration baseline on a prepared split"),
    "predict": ("instructerc.predict", "label the utterances of your own conversations"),
    "plot": ("instructerc.curves", "draw the training curves of one or several runs on the same axes"),
    "export": ("instructerc.export", "merge a LoRA adapter into its base model: a standalone Hugging Face folder"),
    "model": ("instructerc.models", "fetch and convert base models (model pull NAME)"),
}
# the commands whose time goes into torch: run under tcmalloc when there is one (allocator.py)
COMPUTE = {"prepare", "train", "eval", "infer", "baseline", "predict", "export"}


def chosen(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the launcher's --local_rank may come first)."""
    return next((a for a in argv if a in COMMANDS), None)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="instructerc",
        description="Emotion Recognition in Conversation with instruction-tuned LLMs (InstructERC).",
    )
    parser.add_argument("--version", action="version", version=f"instructerc {__version__}")
    # The deepspeed launcher puts --local_rank=N before the subcommand.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = chosen(argv)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == wanted:  # only the chosen stage's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None and chosen(sys.argv[1:]) in COMPUTE:
        from instructerc.allocator import restart_with_tcmalloc

        restart_with_tcmalloc()  # returns only when no restart is due
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except UserError as e:
        print(f"instructerc {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:
        print(f"instructerc {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print(f"instructerc {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
