"""``lensllm predict`` and the selection JSON: every re-prediction from a saved Fit equals the ranking's.

The rankings come from the real methods on the shared FLAN table (and from ``lensllm fit --json``
itself); equality is exact (``==``), because the same Fit, read back from JSON or a card, runs
the same computation.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lensllm_hf.cli import main
from lensllm_hf.cli.predict import predict
from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.errors import LensLLMError
from lensllm_hf.hub_cards import fits_from_ranking, write_card
from lensllm_hf.engine.methods import rank
from lensllm_hf.engine.ranking import Ranking
from lensllm_hf.selector.result import SelectionResult

TARGET = 1_638_400
SIZES = [0, 200, 400, 800, 1600, 3200]


def _table(curves_dir, rows: int = 4) -> CurveTable:
    frame = pd.read_csv(curves_dir / "flan.csv").head(rows)
    return CurveTable(models=frame.iloc[:, 0].tolist(), sizes=np.array(SIZES, dtype=float),
                      losses=frame[[str(s) for s in SIZES]].to_numpy(dtype=float))


@pytest.fixture
def ranking(curves_dir) -> Ranking:
    return rank(_table(curves_dir), TARGET, "default", level=0.9)


def _cli_prediction(capsys, tmp_path, *args: str) -> dict:
    out = tmp_path / "prediction.json"
    assert main(["predict", *args, "--json", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return json.loads(out.read_text(encoding="utf-8"))


def test_fit_json_round_trip_predicts_the_ranking_numbers_exactly(curves_dir, tmp_path, capsys):
    """'lensllm fit --json' -> 'lensllm predict' at the ranking's target and level: the ranking's numbers, exactly."""
    fit_json = tmp_path / "fit.json"
    assert main(["fit", str(curves_dir / "flan.csv"), "--target", str(TARGET), "--budget", "3200",
                 "--json", str(fit_json)]) == 0
    capsys.readouterr()
    ranking = Ranking.read_json(fit_json)
    written = json.loads(fit_json.read_text(encoding="utf-8"))["ranking"]
    assert ranking.ranked
    for c, row in zip(ranking.candidates, written, strict=True):
        if c.fit is None:
            continue
        got = _cli_prediction(capsys, tmp_path, str(fit_json), "--model", c.model, "--at", str(TARGET))
        assert got == {"model": c.model, "at": TARGET, "predicted_loss": row["predicted_loss"],
                       "interval": row["interval"], "level": 0.9, "law": c.fit.law}
        assert (got["predicted_loss"], got["interval"]) == (c.predicted_loss, c.interval)


def test_selection_json_round_trip_and_any_size_and_level(ranking, tmp_path):
    """SelectionResult.to_json -> predict: the ranking's numbers at its target; the Fit's own anywhere else."""
    result = SelectionResult(fits=ranking, table=None, flops=2e15, full_flops=1e17)
    path = result.to_json(tmp_path / "selection.json")
    for c in ranking.ranked:
        at_target = predict(path, c.model, TARGET)
        assert (at_target.predicted_loss, list(at_target.interval), at_target.level) == (
            c.predicted_loss, c.interval, ranking.level)
        elsewhere = predict(path, c.model, 25_000, level=0.5)
        low, high = c.fit.predict_interval([25_000], 0.5)
        assert (elsewhere.predicted_loss, elsewhere.interval) == (float(c.fit.predict([25_000])[0]),
                                                                  (float(low[0]), float(high[0])))


def test_card_round_trip_predicts_the_ranking_numbers_exactly(ranking, tmp_path, capsys):
    """Ranking -> card (folder) -> 'lensllm predict' on the folder and on its README.md: identical numbers."""
    best = ranking.ranked[0]
    folder = tmp_path / "model"
    folder.mkdir()
    write_card(folder, fits_from_ranking(ranking, best.model, dataset="flan", split="test"))
    expected = {"model": best.model, "at": TARGET, "predicted_loss": best.predicted_loss,
                "interval": best.interval, "level": ranking.level, "law": best.fit.law}
    assert _cli_prediction(capsys, tmp_path, str(folder), "--model", best.model, "--at", "1.6384e6") == expected
    assert _cli_prediction(capsys, tmp_path, str(folder / "README.md"), "--model", best.model,
                           "--at", str(TARGET), "--dataset", "flan") == expected


def test_dataset_chooses_among_several_fits_of_one_card(ranking, tmp_path, capsys):
    """Two datasets in one card: --dataset is needed and chooses; the error lists what the card has."""
    best, second = ranking.ranked[0], ranking.ranked[1]
    write_card(tmp_path, fits_from_ranking(ranking, best.model, dataset="flan", split="test"))
    other = fits_from_ranking(ranking, second.model, dataset="gigaword")[0]
    other.model = best.model  # the same model, fitted on another dataset
    write_card(tmp_path, other)
    assert main(["predict", str(tmp_path), "--model", best.model, "--at", str(TARGET)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 fits" in err
    assert "--dataset flan --split test" in err and "--dataset gigaword" in err
    got = _cli_prediction(capsys, tmp_path, str(tmp_path), "--model", best.model, "--at", str(TARGET),
                          "--dataset", "gigaword")
    assert (got["predicted_loss"], got["interval"]) == (second.predicted_loss, second.interval)


def test_far_extrapolation_is_warned_on_stderr(ranking, tmp_path, capsys):
    """Predicting far beyond the data: the number comes with the engine's extrapolation warning on stderr."""
    fit_json = tmp_path / "fit.json"
    ranking.to_json(fit_json)
    model = ranking.ranked[0].model
    assert main(["predict", str(fit_json), "--model", model, "--at", "1e12"]) == 0
    captured = capsys.readouterr()
    assert "predicted loss" in captured.out and "warning: extrapolates" in captured.err


@pytest.mark.parametrize("args, words", [
    (["--at", "lots"], "--at 'lots': not a number"),
    (["--at", "-5"], "--at -5: must be a number of examples above 0"),
    (["--at", "inf"], "--at inf: must be a number of examples above 0 and at most 1e+15"),
    (["--at", "1e300"], "--at 1e300: must be a number of examples above 0 and at most 1e+15"),
    (["--at", "1e6", "--level", "1.5"], "--level '1.5': must be a number between 0 and 1"),
    (["--at", "1e6", "--model", "nobody"], "no model 'nobody'; it ranks"),
    (["--at", "1e6", "--dataset", "flan"], "--dataset: only for a model card"),
    (["--at", "1e6", "--json", "/no/such/folder/out.json"], "the folder /no/such/folder does not exist"),
])
def test_bad_arguments_are_one_line_exit_2(ranking, tmp_path, capsys, args, words):
    """Each bad argument: exit 2 and one stderr line naming it, checked before anything is read."""
    fit_json = tmp_path / "fit.json"
    ranking.to_json(fit_json)
    model = [] if "--model" in args else ["--model", ranking.ranked[0].model]
    assert main(["predict", str(fit_json), *model, *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and words in captured.err and not captured.out


@pytest.mark.parametrize("source, words", [
    ("missing.json", "no such file or folder"),
    ("empty-folder", "its model card has no lensllm fits"),
    ("not-a-ranking.json", "not a lensllm ranking"),
    ("garbage.txt", "neither JSON nor a model card"),
    ("zeroshot.json", "has no fit to predict from: the zeroshot method ranks it without a fitted law"),
    ("x" * 5000, "not a Hub repo ID"),
    ("runs/no/such/file", "no such file or folder"),
])
def test_bad_sources_are_one_line_exit_2(ranking, curves_dir, tmp_path, capsys, monkeypatch, source, words):
    """A missing, empty, foreign or fit-less source: exit 2, one line."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty-folder").mkdir()
    (tmp_path / "not-a-ranking.json").write_text('["a", "list"]', encoding="utf-8")
    (tmp_path / "garbage.txt").write_text("hello", encoding="utf-8")
    rank(_table(curves_dir), TARGET, "zeroshot").to_json(tmp_path / "zeroshot.json")
    assert main(["predict", source, "--model", ranking.ranked[0].model, "--at", "1e6"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and words in captured.err and len(captured.err) < 700


def test_selection_json_has_the_fit_json_shape_and_is_written_atomically(ranking, tmp_path):
    """selection.json = the ranking JSON of 'lensllm fit --json' (same keys and rows) plus a 'selection' block."""
    result = SelectionResult(fits=ranking, table=None, strategy="adaptive", flops=2e15,
                             full_flops=1e17, bought={ranking.ranked[0].model: [0, 200]})
    out = tmp_path / "out"
    path = result.to_json(out / "selection.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert {k: v for k, v in data.items() if k != "selection"} == json.loads(json.dumps(ranking.to_dict()))
    assert data["selection"]["strategy"] == "adaptive" and data["selection"]["fraction_saved"] == pytest.approx(0.98)
    back = Ranking.read_json(path)
    assert [c.fit for c in back.candidates] == [c.fit for c in ranking.candidates]
    assert [c.p_best for c in back.candidates] == [c.p_best for c in ranking.candidates]
    path.chmod(0o640)
    result.to_json(path)  # rewritten in one step: same mode, no temporary file left
    assert path.stat().st_mode & 0o777 == 0o640 and sorted(p.name for p in out.iterdir()) == ["selection.json"]


def test_selection_table_and_markdown_show_p_best_and_the_pick(ranking):
    """The DataFrame has p_best per row (summing to 1); the Markdown ends with the pick statement."""
    result = SelectionResult(fits=ranking, table=None)
    frame = result.ranking
    assert list(frame["p_best"]) == [c.p_best for c in ranking.candidates]
    assert frame["p_best"].sum() == pytest.approx(1.0)
    assert list(frame["interval_low"]) == [c.interval[0] for c in ranking.candidates]
    text = result.to_markdown()
    assert "| P(best) |" in text and text.splitlines()[-1] == f"**{ranking.pick_statement()}**"
    assert result.pick_statement() == ranking.pick_statement()
    assert (result.target_size, result.level) == (ranking.target, ranking.level)  # the ranking's, not copies
    with pytest.raises(TypeError):
        SelectionResult(fits=ranking, table=None, level=0.5)  # no level of its own to disagree with


def test_predict_function_errors_are_lensllm_errors(ranking, tmp_path):
    """The library function raises the same one-line LensLLMError the command prints."""
    fit_json = tmp_path / "fit.json"
    ranking.to_json(fit_json)
    with pytest.raises(LensLLMError, match="no model 'nobody'"):
        predict(fit_json, "nobody", 1e6)
