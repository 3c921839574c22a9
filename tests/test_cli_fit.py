"""``lensllm fit``: the ranking, its JSON, and every bad-input case of the engine issue."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lensllm_hf.cli import main
from lensllm_hf.engine.ranking import Ranking

HEADER = "config name,0,200,400,800,1600,3200,size,family"


def curve(B, F, beta, E, sizes=(0, 200, 400, 800, 1600, 3200)):
    return [B / (F + s**beta) + E for s in sizes]


def write_table(tmp_path, rows, header=HEADER, name="curves.csv"):
    path = tmp_path / name
    lines = [header] + [",".join([model, *map(str, values)]) for model, values in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path, [
        ("small", [*curve(30, 10, 0.4, 1.6), 1e8, "A"]),
        ("medium", [*curve(30, 10, 0.4, 1.2), 4e8, "A"]),
        ("large", [*curve(30, 10, 0.45, 0.9), 1e9, "B"]),
    ])


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_fit_ranks_and_writes_the_documented_json(table, tmp_path, capsys):
    out_json = tmp_path / "fit.json"
    code, out, err = run(capsys, "fit", table, "--target", 100_000, "--json", out_json)
    assert code == 0, err
    assert "best: large" in out and "P(best)" in out
    data = json.loads(out_json.read_text())
    assert data["target"] == 100_000 and data["method"] == "default" and data["best"] == "large"
    assert data["level"] == 0.9 and data["p_best"] == data["ranking"][0]["p_best"]
    assert [r["model"] for r in data["ranking"]] == ["large", "medium", "small"]
    assert sum(r["p_best"] for r in data["ranking"]) == pytest.approx(1.0, abs=1e-12)
    first = data["ranking"][0]
    assert set(first) == {"model", "status", "predicted_loss", "interval", "p_best", "score", "flops", "error",
                          "source", "warnings", "fit"}
    assert set(first["fit"]) == {"law", "params", "sizes", "losses", "used", "terms", "warnings", "basis"}
    assert first["fit"]["law"] == "local-loglog"
    # Which predictor ranked the models, and why, is in the JSON and in the printed table.
    basis = first["fit"]["basis"]
    assert basis.split(":")[0] in ("law", "observed order") or basis.startswith("blend")
    assert f"ranked by {basis}" in out and 0 <= first["fit"]["terms"]["law_weight"] <= 1
    assert first["status"] == "complete" and first["error"] is None
    lo, hi = first["interval"]
    assert lo < first["predicted_loss"] < hi
    # Read back, every row's fit predicts exactly what the file says.
    again = Ranking.read_json(out_json)
    for row, c in zip(data["ranking"], again.candidates):
        assert c.predicted_loss == row["predicted_loss"] and c.interval == row["interval"]
        assert c.p_best == row["p_best"]


def test_budget_limits_the_columns_used(table, tmp_path, capsys):
    out_json = tmp_path / "fit.json"
    code, _, err = run(capsys, "fit", table, "--target", 100_000, "--budget", 800, "--method", "rectified",
                       "--json", out_json)
    assert code == 0, err
    for row in json.loads(out_json.read_text())["ranking"]:
        assert max(row["fit"]["sizes"]) == 800


def test_one_bad_model_fails_alone(tmp_path, capsys):
    path = write_table(tmp_path, [
        ("good", [*curve(30, 10, 0.4, 1.2), 1e8, "A"]),
        ("nan", [5.0, 3.0, "nan", 2.8, 2.7, 2.6, 1e8, "A"]),
        ("other", [*curve(30, 10, 0.4, 1.5), 1e8, "A"]),
    ])
    out_json = tmp_path / "fit.json"
    code, out, err = run(capsys, "fit", path, "--target", 100_000, "--json", out_json)
    assert code == 0
    assert "nan not ranked" in err and "row 3" in err and "column '400'" in err
    data = json.loads(out_json.read_text())
    failed = [r for r in data["ranking"] if r["status"] == "failed"]
    assert [r["model"] for r in failed] == ["nan"] and "400" in failed[0]["error"]
    assert data["best"] == "good"


@pytest.mark.parametrize("cell", ["nan", "inf", "-1", "0", "abc"])
def test_every_model_bad_exits_2_with_one_line(tmp_path, capsys, cell):
    path = write_table(tmp_path, [("only", [5.0, 3.0, cell, 2.8, 2.7, 2.6, 1e8, "A"])])
    code, _, err = run(capsys, "fit", path, "--target", 100_000)
    assert code == 2
    assert "row 2" in err and "column '400'" in err and "Traceback" not in err


def test_too_few_points(tmp_path, capsys):
    path = write_table(tmp_path, [("m", [5.0, 3.0, 2.9, 2.8, 2.7, 2.6, 1e8, "A"])])
    code, _, err = run(capsys, "fit", path, "--target", 100_000, "--budget", 200)
    assert code == 2 and "only 2 usable points" in err and "raise the budget" in err


@pytest.mark.parametrize("header, content, message", [
    ("config name,0,200,abc,800", "m,5,3,2.9,2.8", "header 'abc' is not a subset size"),
    ("config name,0,200,200,800", "m,5,3,2.9,2.8", "size 200 appears twice"),
    ("0,200,400,800", "5,3,2.9,2.8", "first column must name the model"),
    ("", "", "the file is empty"),
    ("config name;0;200;400", "m;5;3;2.9", "not a CSV table"),
])
def test_file_level_errors_exit_2(tmp_path, capsys, header, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(f"{header}\n{content}\n" if header else "")
    code, _, err = run(capsys, "fit", path, "--target", 100_000)
    assert code == 2
    assert message in err and str(path) in err
    assert len(err.strip().splitlines()) == 1


def test_binary_file_and_missing_file(tmp_path, capsys):
    path = tmp_path / "weights.csv"
    path.write_bytes(bytes(range(256)) * 4)
    code, _, err = run(capsys, "fit", path, "--target", 100_000)
    assert code == 2 and "not a text CSV" in err
    code, _, err = run(capsys, "fit", tmp_path / "missing.csv", "--target", 100_000)
    assert code == 2 and "no such file" in err


def test_target_at_or_below_largest_size(table, capsys):
    code, _, err = run(capsys, "fit", table, "--target", 3200)
    assert code == 2 and "must be larger than the largest subset size used (3200)" in err


def test_console_script_prints_no_traceback(tmp_path):
    path = write_table(tmp_path, [("m", [5.0, 3.0, 2.9, 2.8, 2.7, 2.6, 1e8, "A"])])
    result = subprocess.run([sys.executable, "-m", "lensllm_hf.cli", "fit", str(path), "--target", "100"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_real_table_fit(curves_dir, tmp_path, capsys):
    out_json = tmp_path / "flan.json"
    code, out, err = run(capsys, "fit", curves_dir / "flan.csv", "--target", 1_638_400, "--budget", 51_200,
                         "--method", "ats", "--json", out_json)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert len(data["ranking"]) == 30 and all(r["status"] == "complete" for r in data["ranking"])
    predicted = [r["predicted_loss"] for r in data["ranking"]]
    assert predicted == sorted(predicted)
    assert np.all(np.isfinite(predicted))


@pytest.mark.parametrize("where, message", [("missing/fit.json", "does not exist"), (".", "is a folder")])
def test_json_path_is_checked_before_any_work(tmp_path, capsys, where, message):
    code, out, err = run(capsys, "fit", tmp_path / "never-read.csv", "--target", 100_000, "--json", tmp_path / where)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_far_extrapolation_warns_on_stderr_and_in_the_json(tmp_path, capsys):
    path = write_table(tmp_path, [(f"m{i}", [*curve(30, 10, 0.4, 1.0 + 0.2 * i), 1e8, "A"]) for i in range(3)],
                       header=HEADER)
    out_json = tmp_path / "fit.json"
    code, out, err = run(capsys, "fit", path, "--target", 1e6, "--budget", 800, "--json", out_json)
    assert code == 0
    assert "extrapolates 10.3 doublings beyond the largest size 800" in err
    rows = json.loads(out_json.read_text())["ranking"]
    assert all("extrapolates 10.3 doublings" in r["warnings"][0] for r in rows)


def test_near_ties_are_named_with_the_next_step(tmp_path, capsys):
    path = write_table(tmp_path, [
        ("twin-a", [*curve(30, 10, 0.4, 1.2), 1e8, "A"]),
        ("twin-b", [*curve(30, 10, 0.4, 1.201), 1e8, "A"]),
        ("far", [*curve(30, 10, 0.4, 2.5), 1e8, "A"]),
    ])
    code, out, _ = run(capsys, "fit", path, "--target", 100_000)
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert "best: twin-" in last and "overlaps with twin-" in last and "give these two more data" in last


def test_control_characters_in_names_are_escaped(tmp_path, capsys):
    evil = "evil" + chr(27) + "[31m"
    path = write_table(tmp_path, [(evil, [*curve(30, 10, 0.4, 1.2), 1e8, "A"]),
                                  ("good", [*curve(30, 10, 0.4, 1.3), 1e8, "A"])])
    code, out, err = run(capsys, "fit", path, "--target", 100_000)
    assert code == 0
    assert chr(27) not in out + err and "evil" + "\\x1b[31m" in out
