"""Configs are checked whole when read: a corpus of bad ones through ``lensllm select`` and ``lensllm plan``.

Each bad config must give exit 2 and one stderr line naming the key and the fix, before any
data or model is loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lensllm_hf.cli import main
from lensllm_hf.errors import ConfigError
from lensllm_hf.selector.config import SelectConfig
from lensllm_hf.selector import runner
from lensllm_hf.selector.params import SelectionParams, check_params, params_of

GOOD = {
    "candidates": ["models/small", {"model": "models/large", "name": "large"}],
    "dataset": {"files": {"train": "data/train.jsonl", "eval": "data/eval.jsonl"}, "text_column": "text"},
    "target_size": 4000, "min_size": 8, "budget": 32, "max_length": 32,
    "training_args": {"per_device_train_batch_size": 8, "num_train_epochs": 1, "learning_rate": 3e-3},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Config folder with two (empty) model folders and data files: enough for every check before loading."""
    root = tmp_path_factory.mktemp("cfg")
    for name in ("small", "large"):
        (root / "models" / name).mkdir(parents=True)
    (root / "data").mkdir()
    for name in ("train.jsonl", "eval.jsonl", "train.xyz"):
        (root / "data" / name).write_text('{"text": "w1 w2"}\n', encoding="utf-8")
    return root


@pytest.fixture()
def loads(monkeypatch):
    """Every model load (there must be none) and every dataset load, recorded."""
    seen: list[str] = []

    def no_model(model_id, **kwargs):
        seen.append(f"model {model_id}")
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(runner, "load_candidate", no_model)
    monkeypatch.setattr("lensllm_hf.selector.config.DatasetConfig.load", lambda self: seen.append("data") or (_ for _ in ()).throw(
        AssertionError("the data was loaded")))
    return seen


def _with(change: dict | None = None, drop: tuple[str, ...] = (), raw: str | None = None) -> str:
    if raw is not None:
        return raw
    data = {k: v for k, v in GOOD.items() if k not in drop}
    for key, value in (change or {}).items():
        if "." in key:
            section, sub = key.split(".", 1)
            data[section] = {**data[section], sub: value}
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False)


#: (id, config text or change, extra argv, what the one line must say)
BAD = [
    ("zero_shot-string", {"zero_shot": "no"}, [], "zero_shot='no': must be true or false (got a string"),
    ("level-above-1", {"level": 2.0}, [], "level=2.0: must be below 1; e.g. 0.9"),
    ("level-word", {"level": "high"}, [], "level='high': must be a number"),
    ("level-zero", {"level": 0}, [], "level=0: must be above 0"),
    ("target-1e24-text", _with(raw=_with().replace("target_size: 4000", "target_size: 1e24")), [],
     "target_size='1e24': must be a whole number (got a string: YAML reads 1e24 as text"),
    ("target-absurd", {"target_size": 1.0e24}, [], "target_size=1e+24: must be at most 1e+12"),
    ("target-fraction", {"target_size": 4000.5}, [], "target_size=4000.5: must be a whole number"),
    ("target-not-above-budget", {"target_size": 32}, [], "target_size 32 must be larger than the budget 32"),
    ("unknown-key", {"budgets": 64}, [], "unknown key 'budgets'; did you mean 'budget'?"),
    ("unknown-key-far", {"colour": "red"}, [], "unknown key 'colour'; known:"),
    ("python-only-key", {"preprocess": "mine"}, [], "unknown key 'preprocess'"),
    ("strategy-typo", {"strategy": "gird"}, [], "strategy='gird': must be one of grid, adaptive, halving; did you mean 'grid'?"),
    ("method-unknown", {"method": "magic"}, [], "method='magic': must be one of"),
    ("backend-unknown", {"backend": "dask"}, [], "backend='dask': must be one of serial, ray"),
    ("ray-address-serial", {"ray_address": "auto"}, [], "ray_address only applies to backend ray; drop it"),
    ("ray-gpus-negative", {"backend": "ray", "ray_num_gpus": -1}, [], "ray_num_gpus=-1: must be at least 0"),
    ("ray-cpus-serial", {"ray_num_cpus": 2}, [], "ray_num_cpus only applies to backend ray; drop it"),
    ("ray-cpus-fraction", {"backend": "ray", "ray_num_cpus": 1.5}, [], "ray_num_cpus=1.5: must be a whole number"),
    ("budget-below-min", {"min_size": 64}, [], "budget=32 is below min_size=64"),
    ("too-few-points", {"min_size": 16, "zero_shot": False}, [], "give 2 points; a law needs at least 3"),
    ("max-flops-grid", {"max_flops": 1.0e+12}, [], "max_flops only applies to strategy adaptive"),
    ("max-flops-negative", {"max_flops": -1, "strategy": "adaptive"}, [], "max_flops=-1: must be above 0"),
    ("sizes-text", {"sizes": [8, "x"]}, [], "sizes[1]='x': must be a whole number"),
    ("sizes-zero", {"sizes": [0, 8, 16]}, [], "sizes[0]=0: must be at least 1"),
    ("seed-fraction", {"seed": 1.5}, [], "seed=1.5: must be a whole number"),
    ("max-length-zero", {"max_length": 0}, [], "max_length=0: must be at least 1"),
    ("probe-examples", {"probe_examples": 1}, [], "probe_examples=1: must be at least 2"),
    ("claim-ttl", {"claim_ttl_s": 0.5}, [], "claim_ttl_s=0.5: must be at least 5"),
    ("bool-as-number", {"retry_failed": 1}, [], "retry_failed=1: must be true or false"),
    ("training-args-list", {"training_args": [1, 2]}, [], "training_args must be a mapping"),
    ("training-args-typo", {"training_args": {"learning_rat": 1e-3}}, [],
     "training_args: 'learning_rat' is not a TrainingArguments keyword; did you mean 'learning_rate'?"),
    ("training-args-refused", {"training_args": {"load_best_model_at_end": True, "eval_strategy": "steps"}}, [],
     "training_args: TrainingArguments refuses them"),
    ("training-args-bad-value", {"training_args": {"lr_scheduler_type": "sideways"}}, [],
     "training_args: TrainingArguments refuses them"),
    ("candidate-training-args", {"candidates": [{"model": "models/small", "training_args": {"lr": 1}}, "models/large"]},
     [], "candidate 'models/small' training_args: 'lr' is not a TrainingArguments keyword"),
    ("candidate-unknown-key", {"candidates": [{"model": "models/small", "pefft": {"r": 8}}]}, [],
     "candidate 1: unknown key 'pefft'; did you mean 'peft'?"),
    ("candidate-missing-folder", {"candidates": ["./models/nope", "models/large"]}, [],
     "candidates[0]: the local model folder './models/nope' does not exist"),
    ("candidate-twice", {"candidates": ["models/small", "models/small"]}, [], "appear twice"),
    ("candidates-not-list", {"candidates": "models/small"}, [], "'candidates' must be a list"),
    ("candidates-empty", {"candidates": []}, [], "'candidates' is missing or empty"),
    ("dataset-missing", None, [], "'dataset' is missing or empty"),
    ("dataset-file-missing", {"dataset.files": {"train": "data/nope.jsonl"}}, [],
     "dataset.files.train 'data/nope.jsonl' does not exist"),
    ("dataset-file-type", {"dataset.files": {"train": "data/train.xyz"}}, [], "unknown file type '.xyz'"),
    ("dataset-files-extra", {"dataset.files": {"train": "data/train.jsonl", "evl": "data/eval.jsonl"}}, [],
     "dataset: files: unknown key 'evl'; did you mean 'eval'?"),
    ("dataset-key-typo", {"dataset.text_col": "text"}, [], "dataset: unknown key 'text_col'; did you mean 'text_column'?"),
    ("dataset-eval-size", {"dataset.eval_size": -1}, [], "dataset: eval_size=-1: must be at least 1"),
    ("dataset-eval-rows", {"dataset.eval_rows": "all"}, [], "dataset: eval_rows='all': must be a whole number"),
    ("store-memory", {"store": "memory://runs"}, [], "memory://"),
    ("flag-level", {}, ["--level", "1.5"], "command line: level=1.5: must be below 1"),
    ("flag-level-word", {}, ["--level", "high"], "command line: level='high': must be a number"),
    ("flag-strategy", {}, ["--strategy", "fastest"], "command line: strategy='fastest': must be one of grid, adaptive, halving"),
    ("flag-memory-store", {}, ["--store", "memory://x"], "memory://"),
    ("flag-backend", {}, ["--backend", "spark"], "command line: backend='spark': must be one of serial, ray"),
    ("flag-ray-address-serial", {}, ["--ray-address", "auto"], "ray_address only applies to backend ray; drop it"),
    ("flag-ray-cpus-zero", {"backend": "ray"}, ["--ray-num-cpus", "0"], "command line: ray_num_cpus=0: must be at least 1"),
    ("training-args-type", {"training_args": {"learning_rate": "fast"}}, [],
     "training_args: learning_rate='fast': must be a number"),
    ("candidate-training-args-type", {"candidates": [{"model": "models/small", "training_args": {"seed": "x"}}]}, [],
     "candidate 'models/small' training_args: seed='x': must be a whole number"),
    ("candidate-nul", {"candidates": ["models/sm\x00all", "models/large"]}, [],
     "candidates[0] 'models/sm\\x00all' holds a NUL character"),
    ("dataset-file-nul", {"dataset.files": {"train": "data/train\x00.jsonl"}}, [], "holds a NUL character"),
    ("candidate-name-too-long", {"candidates": ["./" + "m" * 5000]}, [], "does not exist"),
    ("ray-address-words", {"backend": "ray", "ray_address": "not an address"}, [],
     "ray_address='not an address': must be auto, host:port"),
    ("ray-address-port", {"backend": "ray", "ray_address": "head:99999"}, [], "must be auto, host:port"),
    ("flag-ray-address-words", {"backend": "ray"}, ["--ray-address", "not an address"],
     "command line: ray_address='not an address': must be auto, host:port"),
    ("yaml-nested-50000", _with(raw="deep: " + "[" * 50_000 + "]" * 50_000 + "\n"), [],
     "YAML nested deeper than 32 levels"),
    ("yaml-5001-digits", _with(raw=_with().replace("target_size: 4000", "target_size: " + "9" * 5001)), [],
     "a number written with 5,001 characters at line"),
    ("yaml-aliases", _with(raw="a: &a [x, x]\n" + "".join(f"b{i}: *a\n" for i in range(200))), [],
     "more than 100 YAML aliases"),
    ("not-yaml", _with(raw="candidates: [a\n"), [], "not valid YAML at line"),
    ("not-mapping", _with(raw="- a\n- b\n"), [], "must be a YAML mapping"),
]


@pytest.mark.parametrize("command", ["select", "plan"])
@pytest.mark.parametrize("name, change, argv, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_config_is_one_line_exit_2_before_anything_loads(folder, loads, capsys, command, name, change, argv,
                                                               message):
    text = change if isinstance(change, str) else _with(change, drop=("dataset",) if change is None else ())
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    out = folder / "out" / name
    code = main([command, str(path), "--output-dir", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and message in err, err
    assert err.startswith(f"lensllm {command}: error: ")
    assert "Traceback" not in err and loads == []
    assert not (out / "store").exists()


def test_a_good_config_reads_with_defaults_and_absolute_paths(folder):
    path = folder / "good.yaml"
    path.write_text(_with({"target_size": 2.5e+4, "store": "runs"}), encoding="utf-8")
    config = SelectConfig.from_yaml(path)
    assert config.params["target_size"] == 25000 and isinstance(config.params["target_size"], int)
    assert config.budget == 32 and config.level == 0.9  # set by the file / the declared default
    assert config.params["store"] == str(folder / "runs")
    assert config.candidates[0] == {"model": str(folder / "models" / "small"), "name": "models/small"}
    assert Path(config.resolved_output_dir()).is_absolute()


def test_a_config_error_carries_the_key_the_value_and_the_file(folder):
    path = folder / "attributes.yaml"
    path.write_text(_with({"sizes": [8, "x"]}), encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        SelectConfig.from_yaml(path)
    assert (error.value.key, error.value.value, error.value.path) == ("sizes[1]", "x", str(path))


def test_every_yaml_key_and_flag_comes_from_the_one_declaration():
    declared = params_of(SelectionParams)
    yaml_keys = {name for name, (_, spec, _) in declared.items() if spec.yaml}
    assert {"budget", "level", "strategy", "training_args", "claim_ttl_s"} <= yaml_keys
    assert not {"train_dataset", "preprocess", "metric_fn", "model_loader"} & yaml_keys
    flags = {spec.cli for _, (_, spec, _) in declared.items() if spec.cli}
    assert {"--strategy", "--store", "--output-dir", "--no-progress", "--verbose"} <= flags
    # The same check serves the selector's keywords and the file's keys.
    assert check_params({"budget": 64.0}) == {"budget": 64}


@pytest.mark.parametrize("value", ["fast", [1, 2]])
def test_training_args_of_the_wrong_type_are_one_line_when_ranking_from_the_store(folder, capsys, value):
    """--from-store builds no TrainingArguments, but the plan reads them: their type is checked with the file."""
    path = folder / "args-type.yaml"
    path.write_text(_with({"training_args": value}), encoding="utf-8")
    code = main(["select", str(path), "--output-dir", str(folder / "out"), "--from-store"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "training_args must be a mapping of TrainingArguments keywords" in err and "Traceback" not in err
