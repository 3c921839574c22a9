"""The selection protocol: scores checked by hand, the published AtS numbers, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensllm_hf.engine.protocol import run_bench, score_p_best, score_ranking, summarize
from lensllm_hf.engine.ranking import CandidateFit, Ranking
from lensllm_hf.cli import main
from lensllm_hf.engine.curves import CurveTable


def test_scores_by_hand():
    truth = np.array([1.0, 1.5, 2.0])
    assert score_ranking(np.array([1.0, 2.0, 3.0]), truth) == pytest.approx((1.0, 1.0))
    # Picking the middle model: (worst - chosen) / (worst - best) = (2 - 1.5) / 1.
    pearson, relacc = score_ranking(np.array([2.0, 1.0, 3.0]), truth)
    assert relacc == pytest.approx(0.5)
    assert pearson == pytest.approx(np.corrcoef([2, 1, 3], [1.0, 1.5, 2.0])[0, 1])
    assert score_ranking(np.array([3.0, 2.0, 1.0]), truth) == pytest.approx((-1.0, 0.0))


def small_table(tmp_path):
    path = tmp_path / "tiny.csv"
    sizes = [0, 200, 400, 800, 1600, 3200, 6400]
    rows = ["config name," + ",".join(map(str, sizes)) + ",size"]
    for name, scale, params in [("a", 1.0, 100), ("b", 1.2, 200), ("c", 1.4, 300)]:
        losses = [scale * (3.0 if s == 0 else 2.5 * (s / 200) ** -0.1) for s in sizes]
        rows.append(",".join([name, *map(str, losses), str(params)]))
    path.write_text("\n".join(rows) + "\n")
    return CurveTable.read_csv(path)


def test_compute_fraction_and_scores_on_a_small_table(tmp_path):
    table = small_table(tmp_path)
    rows = run_bench([table], ["ats", "subtuning", "zeroshot"], target=6400, budgets=[1600])
    by_method = {r["method"]: r for r in rows}
    full = (100 + 200 + 300) * 6400
    # Law methods train every size 200..1600; subtuning only the largest; zero-shot nothing.
    assert by_method["ats"]["compute_fraction"] == pytest.approx(600 * (200 + 400 + 800 + 1600) / full)
    assert by_method["subtuning"]["compute_fraction"] == pytest.approx(600 * 1600 / full)
    assert by_method["zeroshot"]["compute_fraction"] == 0
    for row in rows:  # curves are scaled copies, so every method ranks them perfectly
        assert row["relacc"] == 1.0 and row["pearson"] == pytest.approx(1.0)
    assert by_method["ats"]["median_rel_error"] == pytest.approx(0.0, abs=1e-9)
    assert by_method["zeroshot"]["median_rel_error"] is None


def test_ats_reproduces_the_published_means(curves_dir):
    tables = [CurveTable.read_csv(curves_dir / name) for name in ("flan.csv", "gigaword.csv")]
    summary = summarize(run_bench(tables, ["ats"]))
    published = {"flan": (62.7, 92.1), "gigaword": (93.8, 95.1)}
    for dataset, (pearson, relacc) in published.items():
        assert summary[dataset]["ats"]["pearson"] == pytest.approx(pearson, abs=1.0)
        assert summary[dataset]["ats"]["relacc"] == pytest.approx(relacc, abs=1.0)


def test_bench_command_writes_every_row(curves_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--curves", str(curves_dir / "flan.csv"), "--curves", str(curves_dir / "gigaword.csv"),
                 "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    data = json.loads(out.read_text())
    methods = {"lensllm", "rectified", "power", "ats", "subtuning", "zeroshot", "modelsize", "default", "adaptive", "halving"}
    rows = data["rows"]
    assert {r["method"] for r in rows} == methods
    assert len([r for r in rows if r["method"] not in ("adaptive", "halving")]) == 2 * 7 * 8
    assert {r["dataset"] for r in rows} == {"flan", "gigaword"}
    for row in rows:
        assert set(row) >= {"dataset", "method", "budget", "ratio", "pearson", "relacc", "compute_fraction",
                            "median_rel_error", "p_best_brier", "pick_p_best", "pick_is_best"}
        assert 0.0 <= row["p_best_brier"] <= 2.0
    assert data["summary"]["flan"]["default"]["p_best_brier"] > 0
    assert "| method | PearCorr | RelAcc | 90 % coverage | Brier (uniform) | P(best) of pick / truly best" in printed
    assert data["seconds"] > 0
    assert "### finetune-curves: 2 table(s) (flan, gigaword); target 1,638,400" in printed and "| adaptive |" in printed
    # Bit-for-bit deterministic.
    again = tmp_path / "again.json"
    main(["bench", "--curves", str(curves_dir / "flan.csv"), "--curves", str(curves_dir / "gigaword.csv"),
          "--json", str(again)])
    assert json.loads(again.read_text())["rows"] == rows


def test_bench_rejects_a_budget_at_the_target(curves_dir, capsys):
    code = main(["bench", "--curves", str(curves_dir / "flan.csv"), "--budgets", "1638400"])
    assert code == 2 and "not below the target" in capsys.readouterr().err


@pytest.mark.parametrize("budgets, message", [
    (",", "names no budget"),
    ("", "names no budget"),
    ("inf", "whole number of examples > 0"),
    ("-3200", "whole number of examples > 0"),
    ("0", "whole number of examples > 0"),
    ("nan", "whole number of examples > 0"),
    ("3200.5", "whole number of examples > 0"),
    ("abc", "is not a number"),
])
def test_bench_rejects_bad_budgets_in_one_line_before_any_work(tmp_path, capsys, budgets, message):
    missing_table = tmp_path / "never-read.csv"  # the budgets are checked before any table is read
    code = main(["bench", "--curves", str(missing_table), "--budgets", budgets])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where, message", [("missing/out.json", "does not exist"), (".", "is a folder")])
def test_bench_json_path_is_checked_before_any_work(tmp_path, capsys, where, message):
    code = main(["bench", "--curves", str(tmp_path / "never-read.csv"), "--json", str(tmp_path / where)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_p_best_brier_by_hand():
    models, truth = ["a", "b", "c"], np.array([1.0, 0.9, 1.2])  # b is truly best
    point = Ranking(1e5, "zeroshot", [CandidateFit(m, score=s) for m, s in zip(models, [1, 2, 3])])
    assert score_p_best(point, models, truth) == (2.0, 1.0, 0.0)  # a sure, wrong pick
    right = Ranking(1e5, "zeroshot", [CandidateFit(m, score=s) for m, s in zip(models, [2, 1, 3])])
    assert score_p_best(right, models, truth) == (0.0, 1.0, 1.0)
