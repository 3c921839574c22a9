"""The ``lensllm`` command line: a thin layer over the library.

Each sub-command lives in its own module of this package, with ``add_parser(subparsers)``
and ``run(args) -> int``. A :class:`~lensllm_hf.errors.LensLLMError` becomes one line on
stderr and exit code 2; nothing is printed as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LensLLMError

#: Sub-command modules, in the order ``lensllm --help`` lists them.
COMMANDS = ["fit", "bench", "card", "predict", "select", "demo", "plan"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="lensllm", description="Pick the open LLM to fine-tune before paying for it.")
    parser.add_argument("--version", action="version", version=f"lensllm_hf {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except LensLLMError as error:
        print(f"lensllm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lensllm {args.command}: interrupted; what was recorded so far is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
