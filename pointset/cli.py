"""The ``pointset`` command.

Subcommands: ``info`` (versions and usable backends) and ``demo`` (an end-to-end tour of the
point-set conversions and operators that writes a PNG). Each has ``--help``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import format_info

    print(format_info())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pointset`` command."""
    parser = argparse.ArgumentParser(
        prog="pointset",
        description="Images, RGBD frames and 3D scans as point sets.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="print versions and which operator backends are usable")
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser(
        "demo",
        help="convert a rendered RGBD frame and an image to point sets, sample and group "
        "them, print a summary and write a PNG",
    )
    demo.add_argument("--out", default="pointset_demo.png", help="PNG to write")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        if args.debug:
            raise
        print(f"pointset {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
