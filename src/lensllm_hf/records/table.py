"""The curve table of a store: complete runs as model x subset size -> loss, with FLOPs.

This is where records meet the engine: :func:`load_table` gives the
:class:`~lensllm_hf.engine.curves.CurveTable` the laws are fitted on, and :func:`table_rows`
the records behind each row (for what records say beyond the losses: the NTK probe, warnings).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..engine.curves import CurveTable
from ..errors import RecordError
from .files import warn
from .schema import STATUSES, RunKey, RunRecord
from .store import Store

__all__ = ["load_table", "table_rows"]


def load_table(store: str | os.PathLike | Store | Iterable[RunRecord], *, zero_shot: bool = True,
               streamed: bool = True) -> CurveTable:
    """The curve table of a store: model x subset size -> test loss, with FLOPs and the NTK term.

    Args:
        store: a :class:`Store`, a folder or fsspec URL, or records already loaded.
        zero_shot: add the column D = 0 from evaluations made before training (step 0).
        streamed: also use the evaluations a stream-mode run (``eval_at_examples``) made at its
            requested sizes. A separate run of that size, when there is one, wins.

    Only ``complete`` runs count, each run once (a second record of the same :class:`RunKey` is
    reported and left out, never averaged in as another seed). A cell is the mean
    ``final_eval_loss`` over seeds, ``flops`` the mean of their ``total_flos``; ``params`` is each
    model's parameter count (the NTK probe reaches the ``lensllm`` law through
    :func:`lensllm_hf.engine.methods.base.run_info`, from the records themselves). Rows are model
    IDs; a model run with several training configurations gives one row per configuration,
    named ``model#config_hash`` (plus ``@revision`` / ``+adapter`` when only those differ). A
    model with no usable point at some size carries a ``problems`` entry naming it, as
    ``CurveTable.read_csv`` does.

    Example:
        >>> table = load_table("runs/")
        >>> table.models, table.sizes
        (['gpt2', 'opt-125m'], array([  0, 200, 400, 800]))
    """
    if isinstance(store, (str, os.PathLike, Store)):
        store = Store(store)
        return _table(store.records(), source=store.url, zero_shot=zero_shot, streamed=streamed)
    unique: dict[RunKey, RunRecord] = {}
    for rec in store:
        key = rec.key
        if key in unique:
            warn(f"<records>: the run {key.describe()} is given twice; counted once")
            if unique[key].status == "complete" or rec.status != "complete":
                continue
        unique[key] = rec
    return _table(list(unique.values()), source="<records>", zero_shot=zero_shot, streamed=streamed)


def table_rows(recs: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """The complete records under the row names :func:`load_table` gives them.

    A model run under one set-up is its own row (``model``); one run under several gets a row
    per set-up, ``model#config_hash`` (plus ``@revision`` / ``+adapter`` when only those differ).
    The engine takes what records say beyond the losses (the NTK probe, warnings) by these names.
    """
    complete = [r for r in recs if r.status == "complete"]
    variants: dict[str, set[tuple[str | None, str | None, str | None]]] = {}
    for r in complete:
        variants.setdefault(r.model_id, set()).add((r.config_hash, r.key.revision, r.key.adapter))

    def row(r: RunRecord) -> str:
        seen = variants[r.model_id]
        if len(seen) == 1:
            return r.model_id
        name = f"{r.model_id}#{r.config_hash}"
        if len({v[1] for v in seen}) > 1:
            name += f"@{r.key.revision}"
        if len({v[2] for v in seen}) > 1:
            name += f"+{r.key.adapter}"
        return name

    out: dict[str, list[RunRecord]] = {}
    for r in complete:
        out.setdefault(row(r), []).append(r)
    return out



def _table(recs: list[RunRecord], *, source: str, zero_shot: bool, streamed: bool) -> CurveTable:
    complete = [r for r in recs if r.status == "complete"]
    if not complete:
        counts = {s: sum(r.status == s for r in recs) for s in STATUSES}
        raise RecordError(f"{source}: no complete run records ({len(recs)} found: "
                          + ", ".join(f"{n} {s}" for s, n in counts.items()) + "); let the runs finish or "
                          "point at the store they wrote to", path=source)
    final: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    stream: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    params: dict[str, float] = {}
    for name, r in ((name, r) for name, rs in table_rows(complete).items() for r in rs):
        params.setdefault(name, _num(r.model.get("num_parameters")))
        if r.train_size is not None and r.final_eval_loss is not None:
            final.setdefault((name, int(r.train_size)), []).append((r.final_eval_loss, r.total_flos))
        if zero_shot and r.zero_shot_loss is not None:
            stream.setdefault((name, 0), []).append((r.zero_shot_loss, 0.0))
        if streamed:
            for ev in r.evaluations:
                if ev.at_examples and ev.eval_loss is not None:
                    stream.setdefault((name, int(ev.at_examples)), []).append((ev.eval_loss, ev.total_flos))
    cells = {**stream, **final}  # a separate run of a size wins over a streamed point
    if not cells:
        raise RecordError(f"{source}: the complete runs recorded no finite eval loss; give the Trainer an "
                          "eval_dataset (runs with allow_no_eval=True only record the training loss)", path=source)
    models = sorted({name for name, _ in cells})
    sizes = sorted({size for _, size in cells})
    row_of = {m: i for i, m in enumerate(models)}
    col_of = {s: j for j, s in enumerate(sizes)}
    losses = np.full((len(models), len(sizes)), np.nan)
    flops = np.full((len(models), len(sizes)), np.nan)
    for (name, size), points in cells.items():
        i, j = row_of[name], col_of[size]
        losses[i, j] = float(np.mean([loss for loss, _ in points]))
        spent = [f for _, f in points if f is not None]
        flops[i, j] = float(np.mean(spent)) if spent else np.nan
    problems = {}
    for i, name in enumerate(models):
        missing = [str(sizes[j]) for j in range(len(sizes)) if np.isnan(losses[i, j])]
        if missing:
            problems[name] = (f"no complete run record with a finite eval loss at size(s) {', '.join(missing)}; "
                              "run those subsets or fit on the sizes every model has")
    param_arr = np.array([params.get(m, np.nan) for m in models])
    return CurveTable(
        models=models,
        sizes=np.asarray(sizes, dtype=np.int64),
        losses=losses,
        params=param_arr if np.isfinite(param_arr).any() else None,
        flops=flops,
        source=source,
        problems=problems,
    )


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")

