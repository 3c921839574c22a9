"""The parameters of a selection, declared once: :class:`SelectionParams` and its one validator.

Each field of :class:`SelectionParams` is a parameter of :class:`~lensllm_hf.LensLLMSelector`
(the selector *is* a ``SelectionParams``: the dataclass ``__init__`` stores them as given, in
the scikit-learn way). Its annotation is the type, and its metadata (:func:`param`) the range,
the choices, whether a YAML config may set it and which ``lensllm select`` / ``lensllm plan``
flag overrides it. :func:`check_params` checks any mapping of them against that declaration;
the selector, :class:`~lensllm_hf.selector.config.SelectConfig` and the command line all go through it,
so a bad value gets the same one-line error wherever it enters.

Example:
    >>> check_params({"level": 2.0})
    Traceback (most recent call last):
    ...
    lensllm_hf.errors.ConfigError: level=2.0: must be above 0 and below 1; e.g. 0.9 for 90 % intervals
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from ..errors import ConfigError, LensLLMError
from ..engine.methods import LEVEL, METHODS

__all__ = ["BACKENDS", "GENERATION_KEYS", "STRATEGIES", "Param", "SelectionParams", "add_cli_flags",
           "check_generation", "check_params", "check_task", "cli_values", "param", "params_doc", "params_of",
           "run_sizes", "suggest"]

#: ``strategy`` values: who decides which runs to buy (see :mod:`lensllm_hf.selector.strategies`).
STRATEGIES = ("grid", "adaptive", "halving")
#: ``backend`` values: where the bought runs execute (see :mod:`lensllm_hf.selector.backends`).
BACKENDS = ("serial", "ray")
#: No real fine-tuning set is larger (a trillion examples): a bigger value is a typo.
MAX_EXAMPLES = 10**12


@dataclass(frozen=True)
class Param:
    """What :func:`check_params` knows about one parameter besides its type.

    Attributes:
        help: one line for ``--help`` and error messages.
        low, high: the allowed range (inclusive unless ``open_low`` / ``open_high``).
        choices: the allowed values (for strings).
        yaml: whether a config file may set it (data and functions cannot be written in YAML).
        cli: the command-line flag that overrides it (``"--no-progress"`` style for a switch that
            turns a default True off), or None.
        example: a good value, quoted in error messages.
    """

    help: str = ""
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    choices: tuple[Any, ...] | None = None
    yaml: bool = True
    cli: str | None = None
    example: str | None = None
    metavar: str | None = None
    #: a further check of a value of the right type: value -> (problem or None, normalised value).
    check: Callable[[Any], tuple[str | None, Any]] | None = None


def param(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None, repr: bool = True,
          **spec: Any) -> Any:
    """A dataclass field carrying a :class:`Param` in its metadata."""
    kwargs: dict[str, Any] = {"metadata": {"lensllm": Param(**spec)}, "repr": repr}
    if factory is not None:
        kwargs["default_factory"] = factory
    elif default is not dataclasses.MISSING:
        kwargs["default"] = default
    return field(**kwargs)


@dataclass(eq=False)
class SelectionParams:
    """Every parameter of a selection (the declaration :class:`LensLLMSelector` inherits).

    See :class:`~lensllm_hf.LensLLMSelector` for what each one does; ``help`` in the metadata
    says it in one line.
    """

    candidates: Any = param(help="Hub IDs or local paths, dicts {model, name, peft, training_args, tokenizer, "
                                 "model_kwargs}, or Candidate objects", yaml=False, repr=False)
    train_dataset: Any = param(None, help="a datasets.Dataset of the task", yaml=False, repr=False)
    eval_dataset: Any = param(None, help="the test set whose loss is fitted (None: hold out eval_size rows)",
                              yaml=False, repr=False)
    target_size: int | None = param(None, low=1, high=MAX_EXAMPLES, example="25000",
                                    help="the full training size to predict for (default: the training rows)")
    _: KW_ONLY
    budget: int = param(3200, low=1, high=MAX_EXAMPLES, example="3200", help="the largest subset size trained on")
    min_size: int = param(200, low=1, high=MAX_EXAMPLES, example="200",
                          help="the smallest subset; sizes double from it up to the budget")
    sizes: Sequence[int] | None = param(None, low=1, high=MAX_EXAMPLES, example="[200, 400, 800]",
                                        help="explicit subset sizes instead of the doubling ones")
    zero_shot: bool = param(True, help="evaluate every candidate before training (the D = 0 point)")
    strategy: str = param("grid", choices=STRATEGIES, cli="--strategy",
                          help="grid: every candidate on every size; adaptive: more data only where the decision "
                               "needs it; halving: successive halving on the predicted loss")
    method: str = param("default", choices=tuple(METHODS), cli="--method",
                        help="the selection method (lensllm_hf.engine.methods.METHODS)")
    level: float = param(LEVEL, low=0, high=1, open_low=True, open_high=True, cli="--level",
                         example="0.9 for 90 % intervals", help="interval level of the predictions")
    backend: str = param("serial", choices=BACKENDS, cli="--backend",
                         help="where the runs execute (serial: one after another in this process; ray: Ray tasks "
                              "in parallel, pip install 'lensllm_hf[ray]')")
    ray_address: str | None = param(None, cli="--ray-address", metavar="ADDR", example="auto or ray://head:10001",
                                    help="backend ray: the cluster to join (default: start a local one)")
    ray_num_gpus: float | None = param(None, low=0, high=1024, cli="--ray-num-gpus", metavar="N", example="1",
                                       help="backend ray: GPUs per run (default: 1 where the cluster has GPUs, "
                                            "else 0)")
    store: str | os.PathLike | None = param(None, cli="--store", example="runs/ or s3://bucket/runs", metavar="URL",
                                            help="the run store, a folder or fsspec URL (default: OUTPUT_DIR/store)")
    output_dir: str | os.PathLike = param("lensllm_out", cli="--output-dir", metavar="DIR",
                                          help="outputs and the run store (default: the config's output_dir, "
                                               "else lensllm_out/<config name>)")
    training_args: Any = param(None, example="{learning_rate: 5.0e-5, num_train_epochs: 1}",
                               help="TrainingArguments or its keywords, shared by every run")
    text_column: str = param("text", yaml=False, help="the text column of plain-text data (every token counts)")
    prompt_column: str | None = param(None, yaml=False, help="the prompt column of prompt/completion data (with "
                                                             "completion_column)")
    completion_column: str | None = param(None, yaml=False, help="the completion column: the loss counts its "
                                                                 "tokens only")
    messages_column: str | None = param(None, yaml=False, help="the conversation column ([{role, content}]); the "
                                                               "last assistant turn is the completion")
    chat_template: str | None = param(None, example="'{% for m in messages %}...{% endfor %}'",
                                      help="a Jinja chat template for conversational data (over the tokenizer's)")
    max_length: int = param(512, low=1, high=10**7, example="512", help="tokens kept per example")
    preprocess: Callable | None = param(None, yaml=False, repr=False,
                                        help="(dataset, tokenizer) -> dataset of model features")
    data_collator: Callable | None = param(None, yaml=False, repr=False, help="tokenizer -> collator")
    model_loader: Callable | None = param(None, yaml=False, repr=False, help="Candidate -> (model, tokenizer)")
    metric: str = param("loss", example="loss, exact_match or rouge",
                        help="the number ranked: loss; accuracy (next-token on text data); exact_match, accuracy or "
                             "rouge(1|2|L) on generated answers (prompt/completion or conversational data)")
    metric_fn: Callable | None = param(None, yaml=False, repr=False, help="EvalPrediction -> float for metric")
    greater_is_better: bool | None = param(None, help="for metric (default: True for anything but the loss)")
    generation: Mapping[str, Any] | None = param(None, example="{max_new_tokens: 32, num_beams: 1, rows: 64}",
                                                 check=lambda value: check_generation(value),
                                                 help="how answers are generated for a task metric (max_new_tokens, "
                                                      "num_beams, rows)")
    seed: int = param(0, low=0, high=2**32 - 1, example="0", help="of the shuffle, the training and the adapters")
    eval_size: int = param(500, low=1, high=MAX_EXAMPLES, yaml=False, example="500",
                           help="rows held out when there is no eval set")
    ntk_probe: bool = param(True, help="measure the NTK term in every run (for the lensllm method)")
    probe_examples: int = param(16, low=2, high=10**5, example="16", help="examples of the NTK probe")
    max_flops: float | None = param(None, low=0, open_low=True, example="1.0e+15",
                                    help="adaptive and halving strategies: stop buying runs past this many FLOPs")
    reuse_published: bool = param(False, help="rank a candidate from the fit in its model card instead of "
                                              "training it")
    dataset_name: str | None = param(None, yaml=False, help="how model cards name the data")
    dataset_config: str | None = param(None, yaml=False, help="the dataset configuration model cards name")
    dataset_split: str | None = param(None, yaml=False, help="the split model cards name")
    retry_failed: bool = param(False, cli="--retry-failed", help="run again runs whose record says failed")
    claim_ttl_s: float = param(120.0, low=5, high=86_400, example="120",
                               help="seconds without a heartbeat after which another process takes a run over")
    progress: bool = param(True, yaml=False, cli="--no-progress", help="show one progress bar over the runs")
    verbose: bool = param(False, yaml=False, cli="--verbose", help="keep the Trainer's own logs and bars")

    def __post_init__(self) -> None:
        """Subclasses check the parameters here (the dataclass ``__init__`` only stores them)."""


def params_of(cls: type = SelectionParams) -> dict[str, tuple[Any, Param, Any]]:
    """Every declared parameter: name -> (type, :class:`Param`, default)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("lensllm")
        if spec is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        out[f.name] = (hints[f.name], spec, default)
    return out


def suggest(word: str, known: Sequence[str]) -> str:
    """``"; did you mean 'budget'?"`` when ``word`` is close to a known one, else ``""``."""
    close = difflib.get_close_matches(str(word), list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_params(values: Mapping[str, Any], *, cls: type = SelectionParams, where: str | None = None,
                 yaml: bool = False) -> dict[str, Any]:
    """Check ``values`` against the declaration of ``cls``; return them normalised.

    Normalised: a whole-number float of an int parameter becomes an int (``2.5e+4`` -> 25000).
    ``yaml`` checks the keys a config file may hold (unknown ones get a "did you mean"), and
    ``where`` (the file) starts the message, which then names the key as written in the file.
    Raises :class:`ConfigError`, one line.
    """
    declared = params_of(cls)
    allowed = {name: entry for name, entry in declared.items() if entry[1].yaml or not yaml}
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in allowed:
            hint = suggest(name, list(allowed))
            what = "unknown key" if yaml else "unknown parameter"
            raise ConfigError(_message(where, what, value, repr(name) + (hint or f"; known: {', '.join(sorted(allowed))}"),
                                      bare=True))
        kind, spec, _ = allowed[name]
        problem, normal = _check_value(kind, spec, value)
        if not problem and spec.check is not None and normal is not None:
            problem, normal = spec.check(normal)
        if problem:
            raise ConfigError(_message(where, name, value, problem))
        out[name] = normal
    return out


def run_sizes(values: Mapping[str, Any], *, where: str | None = None) -> list[int]:
    """The subset sizes per candidate, 0 (zero-shot) first when asked; the rules between parameters.

    ``values`` are checked parameters (missing ones take their declared default). Raises
    :class:`ConfigError` when the sizes, budget, target and strategy do not fit together.
    """
    defaults = {name: default for name, (_, _, default) in params_of().items()}
    v = {**defaults, **values}
    head = f"{where}: " if where else ""
    if v["sizes"] is not None:
        sizes = sorted({int(s) for s in v["sizes"]})
        if not sizes:
            raise ConfigError(f"{head}sizes=[]: give subset sizes such as [200, 400, 800], or leave sizes out")
    else:
        if v["budget"] < v["min_size"]:
            raise ConfigError(f"{head}budget={v['budget']} is below min_size={v['min_size']}; raise the budget or "
                             "lower min_size")
        sizes, size = [], int(v["min_size"])
        while size <= v["budget"]:
            sizes.append(size)
            size *= 2
    if v["target_size"] is not None and not int(v["target_size"]) > sizes[-1]:
        raise ConfigError(f"{head}target_size {int(v['target_size']):,} must be larger than the budget {sizes[-1]:,} "
                         "(the largest subset); lower the budget or raise target_size")
    points = len(sizes) + (1 if v["zero_shot"] else 0)
    if points < 3:
        zero = " plus zero-shot" if v["zero_shot"] else ""
        raise ConfigError(f"{head}subset sizes {sizes}{zero} give {points} points; a law needs at least 3: "
                         "raise the budget or lower min_size")
    if v["max_flops"] is not None and v["strategy"] == "grid":
        raise ConfigError(f"{head}max_flops only applies to strategy adaptive or halving; drop it or set "
                         "strategy: adaptive")
    if v["strategy"] == "halving" and len(sizes) < 3:
        raise ConfigError(f"{head}strategy halving needs at least 3 subset sizes, got {sizes}; raise the budget or "
                         "lower min_size")
    if v["backend"] != "ray" and (v["ray_address"] is not None or v["ray_num_gpus"] is not None):
        raise ConfigError(f"{head}ray_address and ray_num_gpus only apply to backend ray; drop them or set "
                         "backend: ray")
    return ([0] if v["zero_shot"] else []) + sizes


#: ``generation`` keys and their ranges (:class:`~lensllm_hf.selector.task_metrics.GenerationConfig`).
GENERATION_KEYS = {"max_new_tokens": (1, 100_000), "num_beams": (1, 64), "rows": (1, MAX_EXAMPLES),
                   "batch_size": (1, 100_000)}


def check_generation(value: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(problem or None, normalised mapping) of a ``generation`` mapping: known keys, whole numbers in range."""
    out = {}
    for key, number in value.items():
        if key not in GENERATION_KEYS:
            return (f"unknown key {key!r}{suggest(str(key), list(GENERATION_KEYS)) or ''}; the keys are "
                    f"{', '.join(GENERATION_KEYS)}"), value
        low, high = GENERATION_KEYS[key]
        ok, normal = _of_type(int, number)
        if not ok or not low <= normal <= high:
            return f"{key} must be a whole number from {low} to {high:g}; e.g. {key}: {max(low, 8)}", value
        out[key] = normal
    return None, out


def check_task(values: Mapping[str, Any], *, where: str | None = None):
    """The :class:`~lensllm_hf.selector.formats.TaskFormat` of checked parameters, and the rules between the
    columns, the metric and ``generation``. Raises :class:`ConfigError`, one line.

    Without ``metric_fn``: plain text ranks by ``loss`` or ``accuracy`` (next-token); prompt/completion
    and conversational data by ``loss`` or a task metric on generated answers (``accuracy`` there is the
    answer's, not the next token's).
    """
    from .formats import TaskFormat
    from .task_metrics import TASK_METRICS as task

    defaults = {name: default for name, (_, _, default) in params_of().items()}
    v = {**defaults, **values}
    head = f"{where}: " if where else ""
    try:
        fmt = TaskFormat(text_column=v["text_column"], prompt_column=v["prompt_column"],
                         completion_column=v["completion_column"], messages_column=v["messages_column"],
                         chat_template=v["chat_template"], max_length=v["max_length"])
    except LensLLMError as error:
        raise ConfigError(f"{head}{error}") from None
    metric, own = v["metric"], v.get("metric_fn") is not None
    if not own and metric != "loss":
        if fmt.layout == "text" and metric != "accuracy":
            why = ("is a task metric on generated answers: set prompt_column and completion_column (or "
                   "messages_column)" if metric in task else "is not built in")
            raise ConfigError(f"{head}metric={metric!r} {why}; plain text ranks by loss or accuracy (next-token), "
                             "or pass metric_fn=...")
        if fmt.layout != "text" and metric not in task:
            raise ConfigError(f"{head}metric={metric!r}: must be loss or one of {', '.join(task)}"
                             f"{suggest(metric, ['loss', *task])}")
    generated = fmt.layout != "text" and metric in task and not own
    if generated and metric.startswith("rouge"):
        import importlib.util

        if importlib.util.find_spec("rouge_score") is None:
            raise ConfigError(f"{head}metric={metric!r} needs the rouge_score package; pip install "
                             "'lensllm_hf[metrics]' (or rouge_score)")
    if v["generation"] is not None and not generated:
        raise ConfigError(f"{head}generation only applies to a task metric ({', '.join(task)}) on prompt/completion "
                         "or conversational data; drop it or set metric")
    if generated and v["greater_is_better"] is False:
        raise ConfigError(f"{head}greater_is_better=False: {metric} is higher when better; drop greater_is_better")
    if fmt.layout != "text" and (v.get("preprocess") is not None or v.get("data_collator") is not None):
        raise ConfigError(f"{head}preprocess and data_collator make features of plain text; drop them, or drop "
                         "prompt_column/completion_column/messages_column")
    return fmt


def params_doc() -> str:
    """The ``Args:`` section of the parameters, from their declaration."""
    lines = ["Args:"]
    for name, (_, spec, default) in params_of().items():
        shown = "" if default is dataclasses.MISSING or default is None else f" (default {default!r})"
        lines.append(f"    {name}: {spec.help}{shown}.")
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------


def add_cli_flags(parser: argparse.ArgumentParser, cls: type = SelectionParams) -> None:
    """One flag per parameter declared with ``cli=``; each overrides the config file's value."""
    for name, (kind, spec, default) in params_of(cls).items():
        if spec.cli is None:
            continue
        if spec.cli.startswith("--no-"):
            parser.add_argument(spec.cli, dest=name, action="store_false", default=None,
                                help=f"do not {spec.help[:1].lower()}{spec.help[1:]}")
        elif _base(kind) is bool:
            parser.add_argument(spec.cli, dest=name, action="store_true", default=None, help=spec.help)
        else:
            # Values arrive as text and are checked by check_params, like the file's (one line, exit 2).
            metavar = spec.metavar or ("{" + ",".join(map(str, spec.choices)) + "}" if spec.choices else name.upper())
            parser.add_argument(spec.cli, dest=name, default=None, help=spec.help, metavar=metavar)


def cli_values(args: argparse.Namespace, cls: type = SelectionParams) -> dict[str, Any]:
    """The parameters the command line set (flags left out are not in it), checked."""
    given = {name: _from_text(kind, getattr(args, name)) for name, (kind, spec, _) in params_of(cls).items()
             if spec.cli is not None and getattr(args, name, None) is not None}
    try:
        return check_params(given, cls=cls)
    except ConfigError as error:
        raise ConfigError(f"command line: {error}") from None


def _from_text(kind: Any, value: Any) -> Any:
    """A flag's text as the parameter's number type when it reads as one (else left for the check to name)."""
    base = _base(kind)
    if not isinstance(value, str) or base not in (int, float):
        return value
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if base is int and number.is_integer() else number


# -- the generic check ---------------------------------------------------------------------------


def _check_value(kind: Any, spec: Param, value: Any) -> tuple[str | None, Any]:
    """(problem or None, normalised value) of one value against its type and :class:`Param`."""
    ok, normal = _of_type(kind, value)
    if not ok:
        example = f"; e.g. {spec.example}" if spec.example else ""
        return f"must be {_describe(kind)}{_hint(value)}{example}", value
    items = normal if isinstance(normal, (list, tuple)) and _base(kind) is not object else [normal]
    for item in items:
        if item is None or isinstance(item, bool) or not isinstance(item, (int, float, str)):
            continue
        if spec.choices is not None and item not in spec.choices:
            return f"must be one of {', '.join(map(str, spec.choices))}{suggest(str(item), spec.choices)}", value
        if isinstance(item, (int, float)):
            if not math.isfinite(item):
                return "must be a finite number", value
            if spec.low is not None and (item < spec.low or (spec.open_low and item == spec.low)):
                return _range(spec), value
            if spec.high is not None and (item > spec.high or (spec.open_high and item == spec.high)):
                return _range(spec), value
    return None, normal


def _of_type(kind: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(kind)
    if kind is Any or kind is object:
        return True, value
    if kind is type(None):
        return value is None, value
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(kind):
            ok, normal = _of_type(member, value)
            if ok:
                return True, normal
        return False, value
    if kind is bool:
        return isinstance(value, bool), value
    if kind is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return True, int(value)  # 2.5e+4 in YAML
        return False, value
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if kind is str:
        return isinstance(value, str), value
    if kind is os.PathLike:
        return isinstance(value, os.PathLike), value
    if origin in (list, Sequence, tuple) or kind in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(kind)
        items = []
        for item in value:
            ok, normal = _of_type(args[0], item) if args else (True, item)
            if not ok:
                return False, value
            items.append(normal)
        return True, items
    if origin in (dict, Mapping) or kind in (dict, Mapping):
        return isinstance(value, Mapping), value
    if kind is Callable or origin is Callable or getattr(kind, "__origin__", None) is Callable:
        return callable(value), value
    return isinstance(value, kind) if isinstance(kind, type) else True, value


def _base(kind: Any) -> Any:
    """``int | None`` -> int; a plain type as is."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = [k for k in typing.get_args(kind) if k is not type(None)]
        return members[0] if len(members) == 1 else object
    return kind


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        members = [k for k in typing.get_args(kind) if k is not type(None) and k is not os.PathLike]
        text = " or ".join(_describe(k) for k in members)
        return text + (" or null" if type(None) in typing.get_args(kind) else "")
    if origin in (list, Sequence, tuple):
        args = typing.get_args(kind)
        return f"a list of {_describe(args[0]).removeprefix('a ')}s" if args else "a list"
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", dict: "a mapping",
             Mapping: "a mapping"}
    return names.get(origin or kind, "a function" if kind is Callable or origin is Callable
                     else getattr(kind, "__name__", str(kind)))


def _range(spec: Param) -> str:
    low = None if spec.low is None else f"{'above' if spec.open_low else 'at least'} {spec.low:g}"
    high = None if spec.high is None else f"{'below' if spec.open_high else 'at most'} {spec.high:g}"
    text = "must be " + " and ".join(p for p in (low, high) if p)
    return text + (f"; e.g. {spec.example}" if spec.example else "")


def _hint(value: Any) -> str:
    """Why a string was not taken for a number or a switch (YAML reads ``no`` and ``1e24`` as text)."""
    if not isinstance(value, str):
        return f" (got {type(value).__name__})" if not isinstance(value, (int, float, list, tuple, type(None))) else ""
    if value.strip().lower() in ("yes", "no", "on", "off", "true", "false", "y", "n"):
        return " (got a string: write true or false without quotes)"
    try:
        float(value)
    except ValueError:
        return ""
    return " (got a string: YAML reads 1e24 as text; write 1.0e+24 or the digits)"


def _message(where: str | None, name: str, value: Any, problem: str, *, bare: bool = False) -> str:
    from .._utils import display

    head = f"{display(where)}: " if where else ""
    return f"{head}{display(name)}: {problem}" if bare else f"{head}{display(name)}={_short(value)}: {problem}"


def _short(value: Any) -> str:
    from .._utils import display

    text = repr(value) if isinstance(value, (str, int, float, bool, type(None), list, tuple)) else type(value).__name__
    return display(text if len(text) <= 60 else text[:59] + "…")
