"""The selection protocol: scores checked by hand, the published AtS numbers, the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensllm_hf.engine.loop import run_loop
from lensllm_hf.engine.policies import POLICIES
from lensllm_hf.engine.protocol import (POLICY_CAPS, at_compute, run_bench, score_p_best, score_ranking, summarize,
                                        table_buyer)
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


def lcdb_like(path, sizes, rows):
    """A table in LCDB's layout: 'config name', sizes without a zero-shot column, an empty size column."""
    header = "config name," + ",".join(map(str, sizes)) + ",size,family"
    lines = [header] + [",".join([name, *(f"{v:.6g}" for v in losses), "", name.split("/")[0]]) for name, losses in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def crossing_rows(sizes, n=4, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.asarray(sizes, dtype=float)
    return [(f"learner/{k}", rng.uniform(0.3, 0.6) + rng.uniform(1, 3) * (sizes / 16) ** -rng.uniform(0.2, 0.6))
            for k in range(n)]


LCDB_SIZES = [16, 23, 32, 45, 64, 91, 128, 181, 256, 362, 512, 724, 1024, 1448, 2048, 3054]


def test_a_table_sets_its_own_target_and_budgets(curves_dir, tmp_path):
    from lensllm_hf.engine.protocol import DEFAULT_BUDGETS, DEFAULT_TARGET, plan_table

    flan = plan_table(CurveTable.read_csv(curves_dir / "flan.csv"))
    assert (flan.target, flan.budgets, flan.family) == (DEFAULT_TARGET, DEFAULT_BUDGETS, "finetune-curves")
    # LCDB's layout: the largest size (off the sqrt(2) grid) is the target; budgets are the sizes
    # from 3054/8 down to 3054/512 that leave 3 fine-tuned sizes (16, 23, 32 first reach 3).
    table = CurveTable.read_csv(lcdb_like(tmp_path / "lcdb" / "t.csv", LCDB_SIZES, crossing_rows(LCDB_SIZES)))
    assert table.params is None and table.sizes[0] == 16 and table.families == ["learner"] * 4
    plan = plan_table(table)
    assert plan.target == 3054 and plan.budgets == (362, 256, 181, 128, 91, 64, 45, 32) and plan.family == "lcdb"
    # --target / --budgets still decide when given.
    assert plan_table(table, 2048, [256, 128], family="mine").budgets == (256, 128)
    assert plan_table(table, 2048).budgets == (256, 181, 128, 91, 64, 45, 32)


def test_a_table_without_room_for_a_budget_says_what_to_pass(tmp_path):
    from lensllm_hf.engine.curves import CurveError
    from lensllm_hf.engine.protocol import plan_table

    sizes = [100, 200, 400, 800]
    table = CurveTable.read_csv(lcdb_like(tmp_path / "short.csv", sizes, crossing_rows(sizes)))
    with pytest.raises(CurveError, match=r"short.csv: no size between target/512 and target/8 .* pass --target and --budgets"):
        plan_table(table)


def test_rows_without_a_true_loss_at_the_target_are_left_out_and_named(tmp_path):
    from lensllm_hf.engine.protocol import plan_table

    rows = crossing_rows(LCDB_SIZES)
    rows[1] = (rows[1][0], np.append(rows[1][1][:-1], np.nan))
    plan = plan_table(CurveTable.read_csv(lcdb_like(tmp_path / "holes.csv", LCDB_SIZES, rows)))
    assert plan.table.models == ["learner/0", "learner/2", "learner/3"]
    assert "left out 1 row(s) without a usable loss at the target 3054: learner/1" in plan.notes[0]


def test_rows_score_coverage_and_the_uniform_brier(tmp_path):
    table = CurveTable.read_csv(lcdb_like(tmp_path / "f" / "t.csv", LCDB_SIZES, crossing_rows(LCDB_SIZES, n=5)))
    rows = run_bench([table], ["default", "subtuning"])
    assert {r["budget"] for r in rows} == {362, 256, 181, 128, 91, 64, 45, 32} and {r["family"] for r in rows} == {"f"}
    truth = table.column(3054)
    for r in rows:
        assert r["uniform_brier"] == pytest.approx(1 - 1 / 5) and r["truly_best"] == int(np.argmin(truth))
    for r in (r for r in rows if r["method"] == "default"):
        from lensllm_hf.engine.methods import rank

        ranking = rank(table.up_to(r["budget"]), 3054, "default")
        inside = [c.interval[0] <= truth[table.models.index(c.model)] <= c.interval[1] for c in ranking.ranked]
        assert r["coverage"] == pytest.approx(np.mean(inside))
        assert r["p_best_by_model"] == [next(c.p_best for c in ranking.ranked if c.model == m) for m in table.models]
    assert all(r["coverage"] is None and r["p_best_by_model"] is None for r in rows if r["method"] == "subtuning")


def test_family_means_are_means_of_table_means(tmp_path):
    from lensllm_hf.engine.protocol import summarize_families

    paths = [lcdb_like(tmp_path / "a" / f"t{k}.csv", LCDB_SIZES, crossing_rows(LCDB_SIZES, seed=k)) for k in range(2)]
    paths.append(lcdb_like(tmp_path / "b" / "long.csv", LCDB_SIZES[:-1], crossing_rows(LCDB_SIZES[:-1], seed=5)))
    rows = run_bench([CurveTable.read_csv(p) for p in paths], ["ats", "subtuning"])
    tables, families = summarize(rows), summarize_families(rows)
    assert set(families) == {"a", "b"} and families["a"]["ats"]["tables"] == 2
    for key in ("pearson", "relacc", "compute_fraction", "p_best_brier", "uniform_brier"):
        expected = np.nanmean([tables["t0"]["ats"][key], tables["t1"]["ats"][key]])
        assert families["a"]["ats"][key] == pytest.approx(expected)
        assert families["b"]["ats"][key] == pytest.approx(tables["long"]["ats"][key], nan_ok=True)
    assert families["a"]["ats"]["coverage_min"] <= families["a"]["ats"]["coverage"] <= families["a"]["ats"]["coverage_max"]


def test_bench_command_on_a_folder_groups_by_family_and_skips_what_it_cannot_score(tmp_path, capsys):
    folder = tmp_path / "learners"
    for k in range(2):
        lcdb_like(folder / f"t{k}.csv", LCDB_SIZES, crossing_rows(LCDB_SIZES, seed=k))
    lcdb_like(folder / "short.csv", [100, 200, 400, 800], crossing_rows([100, 200, 400, 800]))
    out = tmp_path / "bench.json"
    code = main(["bench", "--curves", str(folder), "--methods", "ats,subtuning,zeroshot", "--per-table",
                 "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "short.csv: no size between target/512 and target/8" in captured.err
    assert "### learners: 2 table(s) (t0, t1); target 3,054; budgets 32..362 (8 per table)" in captured.out
    assert "| t0 | ats |" in captured.out and "| t1 | subtuning |" in captured.out
    assert "| zeroshot | - | - | - |" in captured.out  # no zero-shot column: nothing to score, not a wrong score
    data = json.loads(out.read_text())
    assert set(data["families"]) == {"learners"} and data["families"]["learners"]["ats"]["tables"] == 2
    assert len(data["skipped"]) == 1
    code = main(["bench", "--curves", str(folder / "t0.csv"), "--methods", "ats", "--family", "mine"])
    assert code == 0 and "### mine: 1 table(s) (t0)" in capsys.readouterr().out
    code = main(["bench", "--curves", str(folder / "short.csv")])  # one table that cannot be scored: an error
    err = capsys.readouterr().err
    assert code == 2 and "no size between target/512 and target/8" in err and len(err.strip().splitlines()) == 1


def test_lcdb_tables_read_as_their_notice_describes(lcdb_dir):
    from lensllm_hf.engine.protocol import plan_table

    table = CurveTable.read_csv(lcdb_dir / "lcdb-1000.csv")
    assert len(table.models) == 18 and table.models[0] == "SVC_linear" and not table.problems
    assert table.sizes[0] == 16 and table.sizes[-1] == 3054 and 0 not in table.sizes  # no zero-shot column
    assert table.params is None and table.families[4] == "ensemble" and np.all(table.losses > 0)
    plan = plan_table(table)
    assert (plan.target, plan.budgets[0], plan.budgets[-1], plan.family) == (3054, 362, 32, "learning-curves-lcdb")


def test_each_policy_is_scored_at_each_compute_cap_as_the_selector_runs_it():
    sizes = np.array([0, 200, 400, 800, 1600, 3200, 6400, 12800, 409_600])
    d = np.maximum(sizes, 100) / 200
    losses = np.array([3.3 * d ** -0.08] + [(2.2 + 0.05 * i) * d ** -(0.005 + 0.0025 * i) for i in range(5)])
    table = CurveTable(["late", *(f"flat{i}" for i in range(5))], sizes, losses, params=np.arange(1, 7) * 1e8,
                       source="crossing.csv")
    rows = run_bench([table], ["default", "adaptive", "halving"], target=409_600, budgets=[12_800, 1_600])
    seen, full = table.up_to(12_800), float(np.sum(table.params)) * 409_600
    assert [r["budget"] for r in rows if r["method"] == "default"] == [12_800, 1_600]
    for name in ("adaptive", "halving"):
        mine = [r for r in rows if r["method"] == name]
        assert [r["compute_cap"] for r in mine] == list(POLICY_CAPS) and all(r["budget"] is None for r in mine)
        for r in mine:
            # The policy a selection runs (POLICIES[strategy]()), in the same loop, allowed the cap.
            direct = run_loop(POLICIES[name](), seen.models, seen.sizes.tolist(), 409_600, table_buyer(seen),
                              max_flops=r["compute_cap"] * full, params=dict(zip(seen.models, seen.params)))
            assert r["compute_fraction"] == pytest.approx(direct.flops / full) and r["compute_fraction"] <= r["compute_cap"]
    # Grown with the cap: more compute is allowed, more is bought.
    spent = [r["compute_fraction"] for r in rows if r["method"] == "adaptive"]
    assert spent == sorted(spent) and spent[-1] > spent[0]


def test_at_compute_takes_a_policys_row_at_the_cap_and_the_grids_largest_budget_within_it():
    def row(method, budget, fraction, relacc, cap=None, dataset="t"):
        return {"family": "f", "dataset": dataset, "method": method, "budget": budget, "compute_fraction": fraction,
                "relacc": relacc, "pearson": relacc, **({} if cap is None else {"compute_cap": cap})}

    rows = [row("default", 800, 0.03, 1.0), row("default", 400, 0.015, 0.9), row("default", 200, 0.007, 0.8),
            row("default", 400, 0.025, 0.5, dataset="u"),  # no budget of u fits 2 %: u is left out
            row("adaptive", None, 0.019, 0.95, cap=0.02), row("adaptive", None, 0.039, 1.0, cap=0.04)]
    cell = at_compute(rows, 0.02)["f"]
    assert cell["default"] == {"pearson": 90.0, "relacc": 90.0, "compute_fraction": 0.015, "tables": 1}
    assert cell["adaptive"] == {"pearson": 95.0, "relacc": 95.0, "compute_fraction": 0.019, "tables": 1}
