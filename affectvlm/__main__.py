"""`python -m affectvlm COMMAND ...`: the command line.

Each command lives in its own module that exposes `add_parser(subparsers)` (which sets
`func=run` on its parser) and is listed in `_COMMANDS`; importing happens only for the command used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module that implements it (relative to the package)
_COMMANDS = {
    "render": ".scan.cli",
    "predict": ".predict_cli",
    "data": ".data.__main__",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m affectvlm",
        description="AffectVLM: facial expression recognition from 3D/4D face scans with a multiview CLIP.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _COMMANDS.values():
        importlib.import_module(module, __package__ or "affectvlm").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .scan.cli import joined_facing

    parser = build_parser()
    args = parser.parse_args(joined_facing(sys.argv[1:] if argv is None else argv))
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
