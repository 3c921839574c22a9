"""The arguments of :class:`~lensllm_hf.LensLLMCallback`, declared once and checked by pydantic.

Each argument's annotation is its type and range; :class:`CallbackArguments` (a dataclass the
callback inherits) checks them all when the callback is made, so a bad one is a one-line
:class:`~lensllm_hf.errors.ConfigError` naming the argument and the value, before any training.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import KW_ONLY, InitVar, dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SkipValidation

from .. import records
from .._utils import fields_adapter, first_problem
from ..errors import ConfigError

__all__ = ["CallbackArguments"]


def _stream_request(value: Any) -> Any:
    """``eval_at_examples`` as ``"geometric"``, sorted distinct sizes, or None; a ValueError saying what to pass."""
    if value is None or value == "geometric":
        return value
    if isinstance(value, str):
        raise ValueError("pass 'geometric' or a list of sizes such as [200, 400, 800]")
    sizes = list(value) if isinstance(value, Sequence) else []
    if not sizes or any(not isinstance(s, int) or isinstance(s, bool) or s <= 0 for s in sizes):
        raise ValueError("sizes must be whole numbers > 0, e.g. [200, 400, 800]")
    return sorted(set(sizes))


@dataclass(eq=False)  # a callback is itself, never equal to another made with the same arguments
class CallbackArguments:
    """What :class:`~lensllm_hf.LensLLMCallback` takes (its docstring says what each does).

    The values are checked and normalised when it is made: ``eval_at_examples`` becomes sorted
    distinct sizes, ``store`` the store's URL (the :class:`~lensllm_hf.records.Store` itself is
    ``_store``), and ``eval_on_start=None`` whether stream mode is on.
    """

    store: Annotated[str | os.PathLike | records.Store | None, SkipValidation] = None
    _: KW_ONLY
    trainer: InitVar[Any] = None
    ntk_probe: bool = True
    probe_examples: Annotated[int, Field(ge=2)] = 16
    eval_at_examples: Annotated[Literal["geometric"] | list[int] | None, BeforeValidator(_stream_request)] = None
    eval_on_start: bool | None = None
    model_name: Annotated[str, Field(min_length=1)] | None = None
    revision: str | None = None
    train_size: Annotated[int, Field(ge=0)] | None = None
    config_hash: str | None = None
    adapter_hash: str | None = None
    eval_name: str | None = None
    allow_no_eval: bool = False
    probe_memory_mb: Annotated[float, Field(gt=0)] = 2048.0
    projection_dim: Annotated[int, Field(ge=0)] | None = None

    def __post_init__(self, trainer: Any) -> None:
        try:
            checked = fields_adapter(CallbackArguments).validate_python(
                {f.name: getattr(self, f.name) for f in dataclasses.fields(CallbackArguments)})
        except ValueError as error:  # pydantic's ValidationError
            problem = first_problem(error)
            raise ConfigError(f"LensLLMCallback: {problem.shown}: {problem.text}",
                              key=problem.key, value=problem.value) from None
        self.__dict__.update(checked)
        # Checked once here (a URL fsspec cannot open is a one-line RecordError now, not at train begin).
        self._store = None if self.store is None else records.Store(self.store)
        #: The store's URL, or None (records go to ``args.output_dir``).
        self.store = None if self._store is None else self._store.url
        if self.eval_on_start is None:
            self.eval_on_start = self.eval_at_examples is not None
