"""LensLLMSelector on tiny local models: ranking, outputs, resume, failures, memory, adaptive."""

from __future__ import annotations

import gc
import json
import os
import re
import time

import pytest

torch = pytest.importorskip("torch")

from lensllm_hf import LensLLMSelector, SelectionResult  # noqa: E402
from lensllm_hf.errors import LensLLMError  # noqa: E402
from lensllm_hf.engine.ranking import Ranking  # noqa: E402
from lensllm_hf.records import list_records, read_record  # noqa: E402
from lensllm_hf.selector.data import subset_pool  # noqa: E402

from tiny_models import TINY_SELECTION as COMMON, make_tiny_gpt2  # noqa: E402



pytestmark = pytest.mark.usefixtures("one_torch_thread")




@pytest.fixture(scope="module")
def grid(models, data, tmp_path_factory):
    """One grid selection shared by the tests that only read its result (it is the slow part)."""
    out = tmp_path_factory.mktemp("grid")
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"},
                  {"model": str(out / "no-such-model"), "name": "missing"}]
    selector = LensLLMSelector(candidates, *data, output_dir=out, **COMMON)
    return selector, selector.run(), out


def test_grid_ranks_the_candidates_and_reports_the_failed_one(grid):
    selector, result, _ = grid
    assert isinstance(result, SelectionResult)
    frame = result.ranking
    assert {"model", "predicted_loss", "interval_low", "interval_high", "flops", "status", "error"} <= set(frame.columns)
    assert list(frame["model"]) == [*sorted(["small", "large"], key=lambda m: frame.set_index("model")
                                            .loc[m, "predicted_loss"]), "missing"]
    assert result.best in {"small", "large"} and result.best == frame["model"].iloc[0]
    ranked = frame[frame.status == "complete"]
    assert (ranked.interval_low < ranked.predicted_loss).all() and (ranked.predicted_loss < ranked.interval_high).all()
    assert (ranked.flops > 0).all()
    missing = frame[frame.model == "missing"].iloc[0]
    # The loader says what is wrong with the path (not a generic "check the Hub ID").
    assert missing.status == "failed" and "no such folder" in missing.error and "\n" not in missing.error
    assert selector.failures_.keys() == {"missing"}
    # Every (candidate, size) of the working candidates was recorded once, complete.
    names = sorted(os.path.basename(p) for p in list_records(selector.store_))
    assert len(names) == 2 * 4 and all(read_record(p).status == "complete" for p in list_records(selector.store_))
    assert result.bought == {"small": [0, 8, 16, 32], "large": [0, 8, 16, 32]}


def test_compute_is_reported_against_fine_tuning_everything_on_the_target(grid):
    _, result, _ = grid
    assert result.flops == pytest.approx(float(result.ranking.flops.sum()))
    assert result.full_flops > result.flops
    # The cost at the target extrapolates FLOPs per example: 4000 / 32 x the largest run, per candidate.
    assert 0.9 < result.fraction_saved < 1.0


def test_outputs_json_markdown_plot_and_cards(grid, tmp_path):
    _, result, _ = grid
    path = result.to_json(tmp_path / "selection.json")
    data = json.loads(path.read_text())
    assert {"target", "method", "best", "ranking"} <= set(data) and data["best"] == result.best
    back = Ranking.read_json(path)  # the shape of 'lensllm fit --json'
    assert [c.model for c in back.candidates] == list(result.ranking.model)
    assert data["selection"]["fraction_saved"] == pytest.approx(result.fraction_saved)
    md = result.to_markdown()
    assert md.startswith("| # | model |") and "| 1 | " + result.best in md and "failed: /" in md and "no such folder" in md
    fig = result.plot(tmp_path / "selection.png")
    png = (tmp_path / "selection.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "0" in labels  # the zero-shot column sits at a marked left edge
    cards = result.write_cards(tmp_path / "cards")
    assert set(cards) == {"small", "large"}
    from lensllm_hf.hub_cards import load_fits

    fit = load_fits(cards[result.best].parent)[0]
    assert fit.predicted_loss == pytest.approx(result.ranking.predicted_loss.iloc[0])


def test_rerun_skips_every_recorded_run(grid, models, data):
    selector, first, out = grid
    stamps = {p: os.stat(p).st_mtime_ns for p in list_records(selector.store_)}
    again = LensLLMSelector([{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}],
                            *data, output_dir=out, **COMMON)
    plan = again.plan()
    assert {p.status for p in plan} == {"complete"}
    result = again.run()
    assert {p: os.stat(p).st_mtime_ns for p in list_records(selector.store_)} == stamps  # nothing re-ran
    assert result.best == first.best
    assert result.ranking.predicted_loss.iloc[0] == pytest.approx(first.ranking.predicted_loss.iloc[0])


def test_from_store_fits_without_training(grid, models, data):
    selector, first, out = grid
    result = LensLLMSelector([{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}],
                             *data, output_dir=out, **COMMON).from_store()
    assert result.best == first.best
    columns = ["model", "predicted_loss", "interval_low", "interval_high", "p_best"]
    assert result.ranking[columns].equals(first.ranking[columns].iloc[:2])  # the same loop: the same numbers
    unrun = LensLLMSelector([{"model": models["small"], "name": "small"}, {"model": models["small"], "name": "unrun"}],
                            *data, output_dir=out, **COMMON).from_store()
    row = unrun.ranking.set_index("model").loc["unrun"]
    assert row.status == "failed" and row.error.startswith("no complete run in the store")


def test_a_diverging_candidate_fails_and_the_others_are_ranked(models, data, tmp_path):
    candidates = [{"model": models["small"], "name": "ok"},
                  {"model": models["small"], "name": "diverges", "training_args": {"learning_rate": 1e12}}]
    result = LensLLMSelector(candidates, *data, output_dir=tmp_path, **COMMON).run()
    assert result.best == "ok"
    bad = result.ranking.set_index("model").loc["diverges"]
    assert bad.status == "failed" and "NaN" in bad.error
    # It stopped at its first failed run: no compute spent on the larger sizes.
    stored = [os.path.basename(p) for p in list_records(tmp_path / "store")]
    assert sum(name.startswith("diverges__") for name in stored) == 2  # zero-shot + the failed 8-example run


def test_subsets_are_nested_prefixes_of_one_shuffle(data):
    train, _ = data
    small, large = subset_pool(train, 32, seed=0), subset_pool(train, 128, seed=0)
    assert small["text"] == large["text"][:32]  # raising the budget keeps the earlier subsets
    assert subset_pool(train, 32, seed=1)["text"] != small["text"]


def test_adaptive_strategy_reports_what_it_bought(models, data, tmp_path):
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}]
    selector = LensLLMSelector(candidates, *data, output_dir=tmp_path,
                               **{**COMMON, "budget": 64, "strategy": "adaptive"})
    result = selector.run()
    assert result.strategy == "adaptive" and result.best in {"small", "large"}
    assert set(result.bought) == {"small", "large"}
    assert all(sizes[:3] == [0, 8, 16] for sizes in result.bought.values())
    recorded = sum(len(v) for v in result.bought.values())
    assert recorded == len(list_records(tmp_path / "store"))
    assert result.flops == pytest.approx(sum(read_record(p).total_flos for p in list_records(tmp_path / "store")))
    assert 0 < result.fraction_saved < 1


def test_a_flops_budget_holds_from_the_first_run(models, data, tmp_path):
    """The cost estimate stands in for a run's cost before one is measured: a budget below the
    first column buys only what fits."""
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}]
    probe = LensLLMSelector(candidates, *data, output_dir=tmp_path / "probe", **{**COMMON, "strategy": "adaptive"})
    per_example = probe.estimate_cost().flops_per_example()
    assert per_example["large"] > 10 * per_example["small"]
    cap = 8 * per_example["large"]  # the large candidate's first run alone: not beside the small one's
    result = LensLLMSelector(candidates, *data, output_dir=tmp_path / "run",
                             **{**COMMON, "strategy": "adaptive", "max_flops": cap}).run()
    assert 0 < result.flops <= cap
    assert result.bought["small"][:2] == [0, 8] and 8 not in result.bought.get("large", [])
    large = next(c for c in result.fits.candidates if c.model == "large")
    assert large.status == "failed" and "max_flops" in large.error and "raise max_flops" in large.error


def test_a_candidate_without_a_cost_estimate_is_named_when_there_is_a_budget(models, data, tmp_path):
    candidates = [{"model": models["small"], "name": "small"},
                  {"model": models["large"], "name": "odd", "tokenizer": str(tmp_path / "no-tokenizer")}]
    selector = LensLLMSelector(candidates, *data, output_dir=tmp_path, **{**COMMON, "strategy": "adaptive",
                                                                         "max_flops": 1e12})
    with pytest.warns(UserWarning, match="max_flops: no cost estimate for odd"):
        result = selector.run()
    assert result.best == "small"


def test_halving_ranks_with_the_probe_of_its_runs(models, data, tmp_path):
    """The loop strategies' rankings see the NTK probe that the records carry, as the grid's do."""
    from lensllm_hf.engine.laws.rectified import NO_PROBE_WARNING

    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}]
    result = LensLLMSelector(candidates, *data, output_dir=tmp_path,
                             **{**COMMON, "strategy": "halving", "method": "lensllm"}).run()
    ranked = result.fits.ranked
    assert ranked and all(c.fit.law == "lensllm" and NO_PROBE_WARNING not in c.fit.warnings for c in ranked)
    assert all(read_record(p).ntk for p in list_records(tmp_path / "store") if read_record(p).train_size)


def test_a_policy_of_ones_own_runs_through_the_selector(grid, models, data, tmp_path, small_then_leader):
    """run(policy=...) buys what the policy asks through the selector's backend (here: the grid's records)."""
    selector, _, _ = grid
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}]
    again = LensLLMSelector(candidates, *data, output_dir=tmp_path, store=selector.store_, **{**COMMON, "level": 0.8})
    result = again.run(policy=small_then_leader)
    assert result.strategy == "small-then-leader" and result.level == 0.8 and small_then_leader.leaders
    assert result.bought == {m: [0, 8, 16, 32][:3 + small_then_leader.leaders.count(m)] for m in ("small", "large")}
    assert result.flops == pytest.approx(sum(c.flops for c in result.fits.ranked))
    with pytest.raises(LensLLMError, match="is no Policy"):
        again.run(policy="halving")


def test_metric_accuracy_ranks_by_one_minus_accuracy(models, data, tmp_path):
    result = LensLLMSelector([{"model": models["large"], "name": "large"}], *data, output_dir=tmp_path,
                             metric="accuracy", **COMMON).run()
    assert result.metric == "1 - eval_accuracy"
    rec = read_record(next(p for p in list_records(tmp_path / "store") if "__D32__" in p))
    accuracy = rec.evaluations[-1].metrics["eval_accuracy"]
    assert 0 < accuracy < 1
    column = list(result.table.sizes).index(32)
    assert result.table.losses[0, column] == pytest.approx(1 - accuracy)


def test_lora_candidate_is_trained_through_its_adapter(models, data, tmp_path):
    pytest.importorskip("peft")
    lora = {"model": models["large"], "peft": {"peft_type": "LORA", "r": 4, "target_modules": ["c_attn"]}}
    selector = LensLLMSelector([lora], *data, output_dir=tmp_path, **COMMON)
    assert selector.candidates_[0].name.endswith("+lora-r4")
    selector.train(sizes=[8])
    rec = read_record(next(p for p in list_records(tmp_path / "store") if "__D8__" in p))
    assert rec.status == "complete" and rec.adapter["peft_type"] == "LORA" and rec.adapter["r"] == 4
    assert rec.model["trainable_parameters"] < rec.model["num_parameters"] / 2
    # The key the selector planned (adapter hash included) is the one the run was recorded under.
    planned = {p.size: p for p in selector.plan()}
    assert planned[8].status == "complete" and planned[8].key.adapter is not None and rec.key == planned[8].key


def test_no_model_optimizer_or_trainer_outlives_its_run(data, tmp_path):
    """Many runs in one process keep nothing of a finished run alive (a kept model is what grows memory).

    Counting live objects is exact, where RSS is not: the allocator steps up and down by tens of
    MB from one run to the next on its own. ``benchmarks/bench_selector.py`` reports RSS.
    """
    import torch
    from transformers import PreTrainedModel, Trainer

    model = make_tiny_gpt2(tmp_path / "m")
    sizes = list(range(8, 14))  # 6 distinct runs, one at a time
    selector = LensLLMSelector([{"model": model, "name": "m"}], *data, output_dir=tmp_path, sizes=sizes,
                               zero_shot=False, **{k: v for k, v in COMMON.items() if k not in ("min_size", "budget")})
    kinds = (PreTrainedModel, Trainer, torch.optim.Optimizer)
    for size in sizes:
        selector.train(sizes=[size])
        gc.collect()
        alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)]
        assert not alive, f"after the run of size {size} these are still alive: {alive}"
    assert len(list_records(tmp_path / "store")) == len(sizes)


@pytest.mark.parametrize("change, message", [
    ({"candidates": []}, "no candidates"),
    ({"strategy": "fastest"}, "strategy='fastest': must be one of grid, adaptive, halving"),
    ({"strategy": "gird"}, "did you mean 'grid'?"),
    ({"level": 2.0}, "level=2.0: must be below 1"),
    ({"zero_shot": "no"}, "zero_shot='no': must be true or false"),
    ({"target_size": 10**24}, "target_size=1000000000000000000000000: must be at most 1e+12"),
    ({"seed": -1}, "seed=-1: must be at least 0"),
    ({"target_size": 32}, "target_size 32 must be larger than the budget 32"),
    ({"text_column": "body"}, "no text column 'body'"),
    ({"budget": 400}, "exceeds the 200 training rows"),
    ({"budget": 8}, "at least 3"),
    ({"method": "magic"}, "method='magic': must be one of"),
])
def test_bad_input_is_one_line_naming_the_fix(models, data, tmp_path, change, message):
    params = {**COMMON, "output_dir": tmp_path}
    candidates = change.pop("candidates", [models["small"]])
    params.update(change)
    with pytest.raises(LensLLMError, match=re.escape(message)) as info:
        LensLLMSelector(candidates, *data, **params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("training_args, message", [
    ({"learning_rat": 1e-3}, "'learning_rat' is not a TrainingArguments keyword; did you mean 'learning_rate'?"),
    ({"load_best_model_at_end": True, "eval_strategy": "steps"}, "TrainingArguments refuses"),
])
@pytest.mark.parametrize("call", ["run", "train", "check_candidates"])
def test_bad_training_args_are_one_line_before_the_first_run(models, data, tmp_path, training_args, message, call):
    params = {**COMMON, "training_args": {**COMMON.get("training_args", {}), **training_args}}
    selector = LensLLMSelector([models["small"]], *data, **params, output_dir=tmp_path)
    with pytest.raises(LensLLMError, match=re.escape(message)) as info:
        getattr(selector, call)()
    assert "\n" not in str(info.value)
    assert not (tmp_path / "store").exists()  # nothing was made


@pytest.mark.parametrize("training_args", ["fast", [1, 2]])
def test_training_args_of_the_wrong_type_are_refused_when_the_selector_is_made(models, data, tmp_path, training_args):
    """plan() and from_store() read the training arguments without building them: their type is checked first."""
    with pytest.raises(LensLLMError, match="training_args must be a mapping of TrainingArguments keywords") as info:
        LensLLMSelector([models["small"]], *data, **{**COMMON, "training_args": training_args}, output_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_an_unknown_parameter_is_a_type_error_as_for_any_python_call(models, data):
    with pytest.raises(TypeError, match="budgte"):
        LensLLMSelector([models["small"]], *data, budgte=64)


def test_parameters_are_stored_as_given_and_repr_shows_them(models, data, tmp_path):
    selector = LensLLMSelector([models["small"]], *data, output_dir=tmp_path, **{**COMMON, "target_size": 4000.0})
    assert selector.target_size == 4000.0 and selector.target_size_ == 4000  # as given; the checked value apart
    assert selector.budget == 32 and "budget=32" in repr(selector) and "train_dataset" not in repr(selector)
    # Whole-number floats (as YAML or arithmetic give them) plan the very same runs as ints.
    floats = LensLLMSelector([models["small"]], *data, output_dir=tmp_path,
                             **{**COMMON, "max_length": 32.0, "seed": 0.0, "budget": 32.0, "min_size": 8.0})
    assert [p.key for p in floats.plan()] == [p.key for p in selector.plan()]


def test_a_published_fit_is_reused_instead_of_training(grid, models, data, tmp_path):
    import shutil

    from lensllm_hf.hub_cards import write_card

    _, result, _ = grid
    published = tmp_path / "small-with-card"
    shutil.copytree(models["small"], published)
    write_card(published, result.card_fits("small"))  # as if its Hub card carried the fit
    candidates = [{"model": str(published), "name": "small"}, {"model": models["large"], "name": "large"}]
    selector = LensLLMSelector(candidates, *data, output_dir=tmp_path / "out", reuse_published=True, **COMMON)
    again = selector.run()
    row = next(c for c in again.fits.candidates if c.model == "small")
    assert row.status == "complete" and row.source and "hub card" in row.source
    assert row.predicted_loss == pytest.approx(result.ranking.set_index("model").loc["small", "predicted_loss"])
    stored = [os.path.basename(p) for p in list_records(tmp_path / "out" / "store")]
    assert stored and not any(name.startswith("small__") for name in stored)  # nothing trained for it
    assert again.bought == {"large": [0, 8, 16, 32]}


@pytest.mark.parametrize("card, words", [
    ("---\ndeep: " + "[" * 50_000 + "]" * 50_000 + "\n---\n# small\n", "YAML nested deeper than 32 levels"),
    ("absurd", "refused at 4,000 examples: its prediction is not a finite number"),
])
def test_a_hostile_published_card_is_ignored_with_a_warning_and_the_selection_goes_on(grid, models, data, tmp_path,
                                                                                       card, words):
    """A card nested 50,000 deep, or a fit whose parameter reads 1e300: the candidate's published fit is not
    used (a warning names the card), it is ranked from its own runs and the other candidates as ever."""
    import shutil

    from lensllm_hf.hub_cards import write_card

    _, result, out = grid
    published = tmp_path / "small-with-card"
    shutil.copytree(models["small"], published)
    if card == "absurd":
        write_card(published, result.card_fits("small"))
        text = (published / "README.md").read_text(encoding="utf-8")
        card = re.sub(r"(params:\s*\n\s*a: )[-0-9.e+]+", r"\g<1>1.0e+300", text)
        assert card != text
    (published / "README.md").write_text(card, encoding="utf-8")
    candidates = [{"model": str(published), "name": "small"}, {"model": models["large"], "name": "large"}]
    # The grid's store holds every run of both: nothing trains, the reading of the card is what is tested.
    selector = LensLLMSelector(candidates, *data, output_dir=tmp_path / "out", store=str(out / "store"),
                               reuse_published=True, **COMMON)
    with pytest.warns(UserWarning, match=f"{re.escape(str(published))}.*{words}.*small is trained instead"):
        again = selector.run()
    row = next(c for c in again.fits.candidates if c.model == "small")
    assert row.status == "complete" and not (row.source or "").startswith("hub card")
    assert again.best == result.best and again.bought == result.bought  # small from its runs, as in the grid


def test_a_run_claimed_by_another_owner_is_done_last_and_never_twice(models, data, tmp_path):
    import threading

    from lensllm_hf.records import Store

    selector = LensLLMSelector([{"model": models["small"], "name": "small"}], *data, output_dir=tmp_path, **COMMON)
    keys = [planned.key for planned in selector.plan()]
    store = Store(selector.store_)
    claim = store.claim(keys[1])  # as if another selection were training D=8 right now
    assert claim is not None
    made: list = []
    worker = threading.Thread(target=lambda: made.extend(selector.train()))
    worker.start()
    try:
        deadline = time.monotonic() + 120
        others = [k for k in keys if k != keys[1]]
        while time.monotonic() < deadline and not all(
                (rec := store.read(k)) is not None and rec.status == "complete" for k in others):
            time.sleep(0.1)
        time.sleep(0.5)
        assert worker.is_alive() and store.read(keys[1]) is None  # the others are done; it waits, untrained
    finally:
        claim.release()  # the other owner gives up: the selection takes the run over
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert [k.train_size for k in selector.made_] == [0, 16, 32, 8]
    assert store.read(keys[1]).status == "complete" and len(made) == 4


def test_the_serial_backend_asks_again_for_deferred_runs_after_the_others():
    from lensllm_hf.records import RunKey
    from lensllm_hf.selector.backends import SerialBackend
    from lensllm_hf.selector.runner import Deferred

    keys = [RunKey("a", size, 0, "h") for size in (0, 8, 16)]
    calls: list[int] = []
    waits: list[list] = []

    def attempt(key):
        calls.append(key.train_size)
        if key.train_size == 8 and calls.count(8) < 3:
            return Deferred(key, {"host": "elsewhere", "pid": 1})
        return f"record {key.train_size}"

    out = SerialBackend(poll_s=0.0, on_wait=waits.append).run(keys, attempt)
    assert out == ["record 0", "record 8", "record 16"]  # in the order asked
    assert calls == [0, 8, 16, 8, 8] and len(waits) == 2 and "elsewhere:1" in waits[0][0].describe()
