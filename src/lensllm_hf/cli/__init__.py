"""The ``lensllm`` command line: a thin layer over the library.

Each sub-command lives in its own module of this package, with ``add_parser(subparsers)``
and ``run(args) -> int``. A :class:`~lensllm_hf.errors.LensLLMError` becomes one line on
stderr and exit code 2; nothing is printed as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path

from .._utils import one_line
from ..errors import LensLLMError

#: Sub-command modules, in the order ``lensllm --help`` lists them.
COMMANDS = ["fit", "bench", "card", "predict", "select", "demo", "plan"]


def own_command() -> list[str]:
    """The command that runs this interpreter's own ``lensllm``, for lines that run elsewhere (a job script).

    The ``lensllm`` script beside ``sys.executable`` (a virtualenv's ``bin/``) when it is there,
    else ``sys.executable -m lensllm_hf.cli``: either way the line needs no virtualenv on PATH.
    """
    script = Path(sys.executable).with_name("lensllm.exe" if os.name == "nt" else "lensllm")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "lensllm_hf.cli"]


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
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning(args.command)
        try:
            return int(args.run(args) or 0)
        except LensLLMError as error:
            print(f"lensllm {args.command}: error: {one_line(str(error), limit=2000)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"lensllm {args.command}: interrupted; what was recorded so far is kept", file=sys.stderr)
            return 130


def _one_line_warning(command: str):
    """A ``warnings.showwarning`` that prints ``lensllm COMMAND: warning: ...`` on one line: the
    message is for the user, the source file and line of the code that warned are not."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"lensllm {command}: warning: {one_line(str(message), limit=2000)}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
