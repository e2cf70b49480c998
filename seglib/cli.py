"""The ``seglib`` command: each sub-command lives in the module that owns its work.

A module that offers a sub-command defines ``configure_cli(parser)`` and ``cli(args)``;
it is imported only when its sub-command runs, so ``seglib --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "prepare": ("seglib.data", "prepare the dataset's patches and print their summary"),
    "hpo": ("seglib.hpo", "run a HyperBand experiment on NNI and export its trials"),
    "run": ("seglib.pipeline", "execute notebooks 01->04 with papermill and rebuild the report"),
    "predict": ("seglib.predict", "segment whole images with a trained model"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="seglib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure_cli(command_parser)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.cli(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
