"""The parameters of a selection, declared once: :class:`SelectionParams`, checked by pydantic.

Each field of :class:`SelectionParams` is a parameter of :class:`~lensllm_hf.LensLLMSelector`
(the selector *is* a ``SelectionParams``: the dataclass ``__init__`` stores them as given, in
the scikit-learn way). Its annotation is the type and range (``Annotated[int, Field(ge=1)]``,
checked by pydantic), its metadata (:func:`param`) the help line, whether a YAML config may set
it, the ``lensllm select`` / ``lensllm plan`` flag that overrides it and an example.
:func:`check_params` checks any mapping of them against that declaration; the selector,
:class:`~lensllm_hf.selector.config.SelectConfig` and the command line all go through it, so a
bad value gets the same one-line :class:`~lensllm_hf.errors.ConfigError` wherever it enters.

Example:
    >>> check_params({"level": 2.0})
    Traceback (most recent call last):
    ...
    lensllm_hf.errors.ConfigError: level=2.0: must be below 1; e.g. 0.9 for 90 % intervals
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, with_config
from typing_extensions import TypedDict, is_typeddict

from .._utils import display, fields_adapter, first_problem, suggest, whole
from ..engine.methods import LEVEL, METHODS
from ..errors import ConfigError, LensLLMError

__all__ = ["BACKENDS", "STRATEGIES", "Generation", "Param", "SelectionParams", "add_cli_flags", "check_params",
           "check_task", "cli_values", "param", "params_doc", "params_of", "run_sizes", "suggest"]

#: ``strategy`` values: who decides which runs to buy (the policies of :mod:`lensllm_hf.engine.policies`).
STRATEGIES = ("grid", "adaptive", "halving")
#: ``backend`` values: where the bought runs execute (see :mod:`lensllm_hf.selector.backends`).
BACKENDS = ("serial", "ray")
#: No real fine-tuning set is larger (a trillion examples): a bigger value is a typo.
MAX_EXAMPLES = 10**12


def _one_of(options: Callable[[], Iterable[str]]) -> AfterValidator:
    """A check that a name is one of ``options()``, read when checking (registries may grow)."""
    def check(value: str) -> str:
        known = list(options())
        if value not in known:
            raise ValueError(f"must be one of {', '.join(known)}{suggest(value, known)}")
        return value
    return AfterValidator(check)


def _ray_address(value: str) -> str:
    """A Ray address: ``auto``, ``local``, ``host:port``, ``ray://host[:port]`` or ``http(s)://host[:port]``;
    anything else would be copied into every planned command and fail there."""
    problem = ValueError("must be auto, host:port (e.g. 10.0.0.5:6379), ray://host:10001 or http(s)://host:port; "
                         "or leave it out to start a local cluster")
    text = value.strip()
    if text in ("auto", "local"):
        return text
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if scheme not in ("", "ray", "http", "https") or not rest or any(c.isspace() or not c.isprintable() for c in rest):
        raise problem
    try:
        parts = urllib.parse.urlsplit("//" + rest)
        port = parts.port  # a port that is not a number from 0 to 65535 raises
    except ValueError:
        raise problem from None
    if not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment or (not scheme and not port):
        raise problem
    return text


def _path_text(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _whole(low: int, high: int) -> Any:
    """The type of a whole number from ``low`` to ``high`` (``2.5e+4`` in YAML is 25000)."""
    return Annotated[int, BeforeValidator(whole), Field(ge=low, le=high)]


#: A number of examples: a subset size, a target, a budget.
Examples = _whole(1, MAX_EXAMPLES)
Tokens = _whole(1, 100_000)
#: A folder or URL, given as text or a path (kept as text).
PathText = Annotated[str, BeforeValidator(_path_text)]
#: Names from a registry, checked against it when a value is checked (a plug-in may add to it).
Strategy = Annotated[str, _one_of(lambda: STRATEGIES)]
Method = Annotated[str, _one_of(lambda: METHODS)]
Backend = Annotated[str, _one_of(lambda: BACKENDS)]
RayAddress = Annotated[str, AfterValidator(_ray_address)]


@with_config({"extra": "forbid", "strict": True})
class Generation(TypedDict, total=False):
    """How answers are generated for a task metric (:class:`~lensllm_hf.selector.task_metrics.GenerationConfig`)."""

    max_new_tokens: Tokens
    num_beams: _whole(1, 64)
    rows: Examples
    batch_size: Tokens


@dataclass(frozen=True)
class Param:
    """What a parameter is for, besides its type and range (which its annotation holds).

    Attributes:
        help: one line for ``--help``, the selector's docstring and error messages.
        yaml: whether a config file may set it (data and functions cannot be written in YAML).
        cli: the command-line flag that overrides it (``"--no-progress"`` style for a switch that
            turns a default True off), or None.
        example: a good value, quoted in error messages.
        metavar: the flag's value in ``--help``.
    """

    help: str = ""
    yaml: bool = True
    cli: str | None = None
    example: str | None = None
    metavar: str | None = None


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
    target_size: Examples | None = param(None, example="25000",
                                         help="the full training size to predict for (default: the training rows)")
    _: KW_ONLY
    budget: Examples = param(3200, example="3200", help="the largest subset size trained on")
    min_size: Examples = param(200, example="200", help="the smallest subset; sizes double from it up to the budget")
    sizes: Sequence[Examples] | None = param(None, example="[200, 400, 800]",
                                             help="explicit subset sizes instead of the doubling ones")
    zero_shot: bool = param(True, help="evaluate every candidate before training (the D = 0 point)")
    strategy: Strategy = param(
        "grid", cli="--strategy", help="grid: every candidate on every size; adaptive: more data only where the "
                                       "decision needs it; halving: successive halving on the predicted loss")
    method: Method = param(
        "default", cli="--method", help="the selection method (lensllm_hf.engine.methods.METHODS)")
    level: Annotated[float, Field(gt=0, lt=1)] = param(LEVEL, cli="--level", example="0.9 for 90 % intervals",
                                                        help="interval level of the predictions")
    backend: Backend = param(
        "serial", cli="--backend", help="where the runs execute (serial: one after another in this process; ray: "
                                        "warm Ray actors in parallel, pip install 'lensllm_hf[ray]')")
    ray_address: RayAddress | None = param(None, cli="--ray-address", metavar="ADDR",
                                           example="auto or ray://head:10001",
                                           help="backend ray: the cluster to join (default: start a local one)")
    ray_num_cpus: Annotated[int, Field(ge=1, le=10**6)] | None = param(
        None, cli="--ray-num-cpus", metavar="N", example="2",
        help="backend ray: CPUs the runs may use, one per run (a local cluster starts with this many; default: all "
             "of this machine's, or of the cluster)")
    ray_num_gpus: Annotated[float, Field(ge=0, le=1024)] | None = param(
        None, cli="--ray-num-gpus", metavar="N", example="1",
        help="backend ray: GPUs per run (default: 1 where the cluster has GPUs, else 0)")
    store: PathText | None = param(None, cli="--store", example="runs/ or s3://bucket/runs", metavar="URL",
                                   help="the run store, a folder or fsspec URL (default: OUTPUT_DIR/store)")
    output_dir: PathText = param("lensllm_out", cli="--output-dir", metavar="DIR",
                                 help="outputs and the run store (default: the config's output_dir, else "
                                      "lensllm_out/<config name>)")
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
    max_length: _whole(1, 10**7) = param(512, example="512", help="tokens kept per example")
    preprocess: Callable | None = param(None, yaml=False, repr=False,
                                        help="(dataset, tokenizer) -> dataset of model features")
    data_collator: Callable | None = param(None, yaml=False, repr=False, help="tokenizer -> collator")
    model_loader: Callable | None = param(None, yaml=False, repr=False, help="Candidate -> (model, tokenizer)")
    metric: str = param("loss", example="loss, exact_match or rouge",
                        help="the number ranked: loss; accuracy (next-token on text data); exact_match, accuracy or "
                             "rouge(1|2|L) on generated answers (prompt/completion or conversational data)")
    metric_fn: Callable | None = param(None, yaml=False, repr=False, help="EvalPrediction -> float for metric")
    greater_is_better: bool | None = param(None, help="for metric (default: True for anything but the loss)")
    generation: Generation | None = param(None, example="{max_new_tokens: 32, num_beams: 1, rows: 64}",
                                          help="how answers are generated for a task metric (max_new_tokens, "
                                               "num_beams, rows)")
    seed: _whole(0, 2**32 - 1) = param(0, example="0", help="of the shuffle, the training and the adapters")
    eval_size: Examples = param(500, yaml=False, example="500", help="rows held out when there is no eval set")
    ntk_probe: bool = param(True, help="measure the NTK term in every run (for the lensllm method)")
    probe_examples: _whole(2, 10**5) = param(16, example="16", help="examples of the NTK probe")
    max_flops: Annotated[float, Field(gt=0)] | None = param(
        None, example="1.0e+15", help="adaptive and halving strategies: stop buying runs past this many FLOPs")
    reuse_published: bool = param(False, help="rank a candidate from the fit in its model card instead of "
                                              "training it")
    dataset_name: str | None = param(None, yaml=False, help="how model cards name the data")
    dataset_config: str | None = param(None, yaml=False, help="the dataset configuration model cards name")
    dataset_split: str | None = param(None, yaml=False, help="the split model cards name")
    retry_failed: bool = param(False, cli="--retry-failed", help="run again runs whose record says failed")
    claim_ttl_s: Annotated[float, Field(ge=5, le=86_400)] = param(
        120.0, example="120", help="seconds without a heartbeat after which another process takes a run over")
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


def check_params(values: Mapping[str, Any], *, cls: type = SelectionParams, where: str | None = None,
                 yaml: bool = False) -> dict[str, Any]:
    """Check ``values`` against the declaration of ``cls`` with pydantic; return them normalised.

    Normalised: a whole-number float of an int parameter becomes an int (``2.5e+4`` -> 25000), a
    path becomes text. ``yaml`` checks the keys a config file may hold (unknown ones get a "did
    you mean"), and ``where`` (the file) starts the message. Raises
    :class:`~lensllm_hf.errors.ConfigError`, one line.
    """
    declared = params_of(cls)
    names = frozenset(name for name, (_, spec, _) in declared.items() if spec.yaml or not yaml)
    try:
        return fields_adapter(cls, names).validate_python(dict(values))
    except ValidationError as error:
        problem = first_problem(error, yaml=True)
    head = f"{display(where)}: " if where else ""
    name, _, inner = problem.key.partition(".")
    if problem.unknown:  # a key of the file, or of a mapping such as generation
        known = _keys(declared[name][0]) if inner else names
        unknown = inner or name
        hint = suggest(unknown, known) or f"; known: {', '.join(sorted(known))}"
        raise ConfigError(f"{head}{name + ': ' if inner else ''}unknown key {display(repr(unknown))}{hint}",
                          key=problem.key, path=where) from None
    spec = declared[name.split("[")[0]][1]
    example = f"; e.g. {spec.example}" if spec.example and "e.g." not in problem.text else ""
    raise ConfigError(f"{head}{problem.shown}: {problem.text}{example}",
                      key=problem.key, value=problem.value, path=where) from None


def _keys(kind: Any) -> list[str]:
    """The keys of the TypedDict in ``kind`` (``Generation | None``)."""
    for member in typing.get_args(kind) or (kind,):
        if is_typeddict(member):
            return list(typing.get_type_hints(member))
    return []


def run_sizes(values: Mapping[str, Any], *, where: str | None = None) -> list[int]:
    """The subset sizes per candidate, 0 (zero-shot) first when asked; the rules between parameters.

    ``values`` are checked parameters (missing ones take their declared default). Raises
    :class:`~lensllm_hf.errors.ConfigError` when the sizes, budget, target and strategy do not fit together.
    """
    defaults = {name: default for name, (_, _, default) in params_of().items()}
    v = {**defaults, **values}
    head = f"{where}: " if where else ""
    if v["sizes"] is not None:
        sizes = sorted({int(s) for s in v["sizes"]})
        if not sizes:
            raise ConfigError(f"{head}sizes=[]: give subset sizes such as [200, 400, 800], or leave sizes out",
                              key="sizes", value=v["sizes"], path=where)
    else:
        if v["budget"] < v["min_size"]:
            raise ConfigError(f"{head}budget={v['budget']} is below min_size={v['min_size']}; raise the budget or "
                              "lower min_size", key="budget", value=v["budget"], path=where)
        sizes, size = [], int(v["min_size"])
        while size <= v["budget"]:
            sizes.append(size)
            size *= 2
    if v["target_size"] is not None and not int(v["target_size"]) > sizes[-1]:
        raise ConfigError(f"{head}target_size {int(v['target_size']):,} must be larger than the budget {sizes[-1]:,} "
                          "(the largest subset); lower the budget or raise target_size", key="target_size",
                          value=v["target_size"], path=where)
    points = len(sizes) + (1 if v["zero_shot"] else 0)
    if points < 3:
        zero = " plus zero-shot" if v["zero_shot"] else ""
        raise ConfigError(f"{head}subset sizes {sizes}{zero} give {points} points; a law needs at least 3: "
                          "raise the budget or lower min_size", key="budget", value=v["budget"], path=where)
    if v["max_flops"] is not None and v["strategy"] == "grid":
        raise ConfigError(f"{head}max_flops only applies to strategy adaptive or halving; drop it or set "
                          "strategy: adaptive", key="max_flops", value=v["max_flops"], path=where)
    if v["strategy"] == "halving" and len(sizes) < 3:
        raise ConfigError(f"{head}strategy halving needs at least 3 subset sizes, got {sizes}; raise the budget or "
                          "lower min_size", key="strategy", value="halving", path=where)
    ray_only = [name for name in ("ray_address", "ray_num_cpus", "ray_num_gpus") if v[name] is not None]
    if v["backend"] != "ray" and ray_only:
        one = len(ray_only) == 1
        raise ConfigError(f"{head}{' and '.join(ray_only)} only appl{'ies' if one else 'y'} to backend ray; drop "
                          f"{'it' if one else 'them'} or set backend: ray", key=ray_only[0], value=v[ray_only[0]],
                          path=where)
    return ([0] if v["zero_shot"] else []) + sizes


def check_task(values: Mapping[str, Any], *, where: str | None = None):
    """The :class:`~lensllm_hf.selector.formats.TaskFormat` of checked parameters, and the rules between the
    columns, the metric and ``generation``. Raises :class:`~lensllm_hf.errors.ConfigError`, one line.

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
        raise ConfigError(f"{head}{error}", path=where) from None
    metric, own = v["metric"], v.get("metric_fn") is not None

    def refuse(text: str, key: str = "metric") -> ConfigError:
        return ConfigError(f"{head}{text}", key=key, value=v[key], path=where)

    if not own and metric != "loss":
        if fmt.layout == "text" and metric != "accuracy":
            why = ("is a task metric on generated answers: set prompt_column and completion_column (or "
                   "messages_column)" if metric in task else "is not built in")
            raise refuse(f"metric={metric!r} {why}; plain text ranks by loss or accuracy (next-token), or pass "
                         "metric_fn=...")
        if fmt.layout != "text" and metric not in task:
            raise refuse(f"metric={metric!r}: must be loss or one of {', '.join(task)}"
                         f"{suggest(metric, ['loss', *task])}")
    generated = fmt.layout != "text" and metric in task and not own
    if generated and metric.startswith("rouge"):
        import importlib.util

        if importlib.util.find_spec("rouge_score") is None:
            raise refuse(f"metric={metric!r} needs the rouge_score package; pip install 'lensllm_hf[metrics]' "
                         "(or rouge_score)")
    if v["generation"] is not None and not generated:
        raise refuse(f"generation only applies to a task metric ({', '.join(task)}) on prompt/completion or "
                     "conversational data; drop it or set metric", "generation")
    if generated and v["greater_is_better"] is False:
        raise refuse(f"greater_is_better=False: {metric} is higher when better; drop greater_is_better",
                     "greater_is_better")
    if fmt.layout != "text" and (v.get("preprocess") is not None or v.get("data_collator") is not None):
        raise refuse("preprocess and data_collator make features of plain text; drop them, or drop "
                     "prompt_column/completion_column/messages_column", "preprocess")
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
    for name, (_, spec, default) in params_of(cls).items():
        if spec.cli is None:
            continue
        if spec.cli.startswith("--no-"):
            parser.add_argument(spec.cli, dest=name, action="store_false", default=None,
                                help=f"do not {spec.help[:1].lower()}{spec.help[1:]}")
        elif isinstance(default, bool):
            parser.add_argument(spec.cli, dest=name, action="store_true", default=None, help=spec.help)
        else:
            # Values arrive as text and are checked by check_params, like the file's (one line, exit 2).
            parser.add_argument(spec.cli, dest=name, default=None, help=spec.help, metavar=spec.metavar or name.upper())


def cli_values(args: argparse.Namespace, cls: type = SelectionParams) -> dict[str, Any]:
    """The parameters the command line set (flags left out are not in it), checked."""
    given = {name: _number(value) if _is_number(kind) else value for name, (kind, spec, _) in params_of(cls).items()
             if spec.cli is not None and (value := getattr(args, name, None)) is not None}
    return check_params(given, cls=cls, where="command line")


def _is_number(kind: Any) -> bool:
    return any(member in (int, float) for member in typing.get_args(kind) or (kind,))


def _number(text: str) -> Any:
    """A flag's text as a number when it reads as one (else left for the check to name)."""
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() else number
