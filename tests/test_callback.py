"""LensLLMCallback on real Trainer runs with tiny models (CPU, a few steps each)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lensllm_hf import LensLLMCallback
from lensllm_hf.callbacks import CallbackError
from lensllm_hf.errors import LensLLMError
from transformers import TrainerCallback
from lensllm_hf.records import SCHEMA_VERSION, RecordError, adapter_hash, load_table, read_record, table_rows
from tiny_models import (lm_collator, make_text_dataset, make_tiny_gpt2, make_tiny_t5, make_tokenizer,
                         seq2seq_collator, tokenize_lm, tokenize_seq2seq)

torch.set_num_threads(1)
TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "lensllm_hf"
REQUIRED = ("schema_version", "model", "train_size", "evaluations", "final_eval_loss", "total_flos", "ntk", "status")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def gpt2_path(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


@pytest.fixture(scope="module")
def data(tok):
    return tokenize_lm(make_text_dataset(48, seed=1), tok), tokenize_lm(make_text_dataset(24, seed=2), tok)


def make_trainer(path, tok, data, out, callbacks=(), eval_dataset="default", model=None, **args):
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    defaults = dict(per_device_train_batch_size=8, num_train_epochs=1, learning_rate=1e-3, save_strategy="no",
                    use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=0)
    defaults.update(args)
    train, ev = data
    model = model if model is not None else AutoModelForCausalLM.from_pretrained(path)
    return Trainer(model=model, args=TrainingArguments(str(out), **defaults), train_dataset=train,
                   eval_dataset=ev if eval_dataset == "default" else eval_dataset, data_collator=lm_collator(tok),
                   callbacks=list(callbacks))


def records_in(store) -> list[str]:
    """The record files of a store (a store may keep other entries, such as its claims)."""
    return sorted(name for name in os.listdir(store) if name.endswith(".lensllm.json"))


def record_of(out) -> dict:
    return json.loads((Path(out) / "lensllm_record.json").read_text())


def test_one_line_records_a_complete_run(gpt2_path, tok, data, tmp_path):
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, eval_strategy="steps", eval_steps=3)
    trainer.add_callback(LensLLMCallback(probe_examples=8))
    trainer.train()
    rec = record_of(tmp_path)
    assert all(key in rec for key in REQUIRED)
    assert rec["status"] == "complete" and rec["error"] is None and rec["schema_version"] == SCHEMA_VERSION
    assert rec["model"]["id"] == gpt2_path and rec["model"]["architecture"] == "GPT2LMHeadModel"
    assert rec["model"]["num_parameters"] == rec["model"]["trainable_parameters"] == trainer.model.num_parameters()
    assert rec["train_size"] == 48 and rec["seed"] == 0 and rec["world_size"] == 1
    assert rec["effective_batch_size"] == 8 and rec["adapter"] is None
    assert len(rec["dataset"]["fingerprint"]) == 16 and rec["dataset"]["num_rows"] == 48
    assert rec["dataset"]["eval_num_rows"] == 24 and len(rec["dataset"]["eval_fingerprint"]) == 16
    # Not bound to the Trainer, the probe took its examples from an evaluation before the first
    # step, which the record leaves out (eval_on_start is off) and the Trainer's args get back.
    assert [e["step"] for e in rec["evaluations"]] == [3, 6] and trainer.args.eval_on_start is False
    # At each evaluation the callback asks for a log too, so that state.total_flos is current.
    assert [p["step"] for p in rec["train_curve"]] == [3, 6]
    assert [e["examples_seen"] for e in rec["evaluations"]] == [24, 48]
    assert rec["final_eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"], rel=1e-6)
    assert rec["total_flos"] == trainer.state.total_flos > 0
    assert 0 < rec["evaluations"][0]["total_flos"] < rec["evaluations"][1]["total_flos"] == rec["total_flos"]
    ntk = rec["ntk"]
    assert ntk["k"] == 8 and len(ntk["eigenvalues"]) == len(ntk["r"]) == 8
    assert ntk["eta"] == 1e-3 and ntk["t"] == 6 and 0 <= ntk["F"] <= sum(x * x for x in ntk["r"])
    assert ntk["lr_sum"] < ntk["eta"] * ntk["t"]  # linear decay: less than eta * t
    assert rec["wall_time_s"] > 0 and rec["versions"]["transformers"]
    assert rec["training"]["learning_rate"] == 1e-3 and len(rec["config_hash"]) == 10
    # The manual evaluate() above fired on_evaluate again at the last step: still two evaluations.
    assert len(record_of(tmp_path)["evaluations"]) == 2


def test_store_and_load_table(gpt2_path, tok, data, tmp_path):
    store = tmp_path / "runs.json"  # a store folder may have any name
    recs = []
    for size in (16, 32):
        train = data[0].select(range(size))
        cb = LensLLMCallback(store=store, model_name="tiny", probe_examples=4)
        trainer = make_trainer(gpt2_path, tok, (train, data[1]), tmp_path / f"out{size}", callbacks=[cb])
        if size == 16:
            trainer.evaluate()  # before train(): becomes the run's zero-shot point (and gives the probe its examples)
        trainer.train()
        assert cb.record_path.startswith(str(store)) and cb.record_path.endswith(".lensllm.json")
        recs.append(read_record(cb.record_path))
    assert not (tmp_path / "out16" / "lensllm_record.json").exists()
    rec = recs[0]
    assert rec.model_id == "tiny" and rec.train_size == 16 and rec.status == "complete"
    assert [e.step for e in rec.evaluations] == [0, 2] and rec.zero_shot_loss > rec.final_eval_loss
    assert rec.dataset["fingerprint"] != recs[1].dataset["fingerprint"]
    assert rec.dataset["eval_fingerprint"] == recs[1].dataset["eval_fingerprint"] is not None
    assert records_in(store) == sorted(r.name for r in recs)
    table = load_table(str(store))
    assert table.models == ["tiny"] and table.sizes.tolist() == [0, 16, 32]
    assert table.flops[0, 0] == 0 < table.flops[0, 1] < table.flops[0, 2]
    from lensllm_hf.engine.methods.base import run_info

    probe = run_info(table_rows(recs))["tiny"]  # the spectrum the lensllm law fits t along
    assert probe.eigenvalues and len(probe.eigenvalues) == len(probe.coefficients)


def test_asks_for_a_final_evaluation_when_the_run_has_none(gpt2_path, tok, data, tmp_path):
    # eval_strategy "no": the callback asks for one evaluation, at the last step.
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "a", callbacks=[LensLLMCallback(ntk_probe=False)],
                           max_steps=4)
    trainer.train()
    rec = record_of(tmp_path / "a")
    assert [e["step"] for e in rec["evaluations"]] == [4] and rec["final_eval_loss"] is not None
    assert rec["ntk"] is None
    # Steps strategy whose last step is not an evaluation step: the Trainer adds it, not twice.
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "b", callbacks=[LensLLMCallback(ntk_probe=False)],
                           max_steps=5, eval_strategy="steps", eval_steps=2)
    trainer.train()
    assert [e["step"] for e in record_of(tmp_path / "b")["evaluations"]] == [2, 4, 5]


def test_stopped_early_gets_its_final_evaluation(gpt2_path, tok, data, tmp_path):
    # Stopped by a callback before this one: the callback sees it in on_step_end and asks for an
    # evaluation (steps strategy); an epoch strategy evaluates at the stop anyway, not twice.
    for strategy in ("steps", "epoch"):
        trainer = make_trainer(gpt2_path, tok, data, tmp_path / strategy, eval_strategy=strategy, eval_steps=5,
                               callbacks=[StopAt2(), LensLLMCallback(ntk_probe=False)])
        trainer.train()
        rec = record_of(tmp_path / strategy)
        assert [e["step"] for e in rec["evaluations"]] == [2] and rec["status"] == "complete"


class StopAt2(TrainerCallback):
    """Stops training at step 2 (added after LensLLMCallback: it decides after the callback's on_step_end)."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            control.should_training_stop = True


class CountEvaluations(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_evaluate(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def test_bound_trainer_gives_the_final_evaluation_outside_the_loop(gpt2_path, tok, data, tmp_path):
    # A callback after this one stops the run at a step without an evaluation (steps strategy).
    count = CountEvaluations()
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "bound", eval_strategy="steps", eval_steps=5)
    cb = LensLLMCallback(probe_examples=4, trainer=trainer)  # trainer=: binds it and adds it to the Trainer
    trainer.add_callback(StopAt2())
    trainer.add_callback(count)
    assert cb.trainer is trainer and sum(c is cb for c in trainer.callback_handler.callbacks) == 1
    assert cb.bind(trainer) is cb and sum(c is cb for c in trainer.callback_handler.callbacks) == 1
    trainer.train()
    rec = record_of(tmp_path / "bound")
    assert rec["status"] == "complete" and [e["step"] for e in rec["evaluations"]] == [2]
    assert rec["final_eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"], rel=1e-6)
    # Bound, the probe drew its examples from trainer.get_eval_dataloader(): no extra evaluation.
    assert count.steps == [2, 2] and rec["ntk"]["F"] is not None and rec["ntk"]["t"] == 2

    # Not bound, the callback cannot evaluate after the loop: the record says so and how to fix it.
    count = CountEvaluations()
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "free", eval_strategy="steps", eval_steps=5,
                           callbacks=[LensLLMCallback(probe_examples=4), StopAt2(), count])
    trainer.train()
    rec = record_of(tmp_path / "free")
    assert rec["status"] == "failed" and "bind(trainer)" in rec["error"] and rec["evaluations"] == []
    assert count.steps == [0] and rec["ntk"]["F"] is not None  # the probe's evaluation before step 1


def test_bound_and_free_callbacks_write_the_same_record(gpt2_path, tok, data, tmp_path):
    from transformers import AutoModelForCausalLM

    recs = []
    for bound in (False, True):
        # Dropout on, shuffled data: an RNG draw either way would change the losses.
        model = AutoModelForCausalLM.from_pretrained(gpt2_path, resid_pdrop=0.2, attn_pdrop=0.2, embd_pdrop=0.2)
        cb = LensLLMCallback(probe_examples=8, eval_at_examples=[16])
        trainer = make_trainer(gpt2_path, tok, data, tmp_path / str(bound), model=model, max_steps=5,
                               per_device_train_batch_size=4, callbacks=[] if bound else [cb])
        if bound:
            cb.bind(trainer)
        trainer.train()
        recs.append(record_of(tmp_path / str(bound)))
    volatile = ("wall_time_s", "started_at", "finished_at")
    for rec in recs:
        for key in volatile:
            rec.pop(key)
        rec["ntk"].pop("seconds")
        for ev in rec["evaluations"]:
            for key in [k for k in ev["metrics"] if k.endswith(("_runtime", "_per_second"))]:
                ev["metrics"].pop(key)
    assert recs[0] == recs[1]
    assert [e["step"] for e in recs[0]["evaluations"]] == [0, 4, 5] and recs[0]["ntk"]["F"] is not None


def test_recording_marks_failures_and_keeps_complete_runs(gpt2_path, tok, data, tmp_path):
    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                raise RuntimeError("disk on fire")

    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "a", callbacks=[Boom()], max_steps=3)
    cb = LensLLMCallback(ntk_probe=False).bind(trainer)
    with pytest.raises(RuntimeError), cb.recording():
        trainer.train()
    rec = record_of(tmp_path / "a")
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: disk on fire"

    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "b", max_steps=2)
    cb = LensLLMCallback(ntk_probe=False).bind(trainer)
    with pytest.raises(KeyError), cb.recording():
        trainer.train()
        raise KeyError("after training")  # an error after the run finished does not unmake it
    assert record_of(tmp_path / "b")["status"] == "complete"


def test_stream_mode_records_a_whole_curve(gpt2_path, tok, data, tmp_path):
    cb = LensLLMCallback(eval_at_examples=[8, 16, 32], store=tmp_path / "store", model_name="tiny", ntk_probe=False)
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, callbacks=[cb], per_device_train_batch_size=4,
                           lr_scheduler_type="constant")
    trainer.train()
    rec = read_record(cb.record_path)
    assert rec.warnings == []  # constant learning rate, one epoch: the points match nested runs
    assert [(e.step, e.examples_seen, e.at_examples) for e in rec.evaluations] == [
        (0, 0, None), (2, 8, 8), (4, 16, 16), (8, 32, 32), (12, 48, None)]
    assert rec.zero_shot_loss == rec.evaluations[0].eval_loss
    assert rec.stream == {"eval_at_examples": [8, 16, 32]}
    table = load_table(tmp_path / "store")
    assert table.sizes.tolist() == [0, 8, 16, 32, 48]
    assert table.losses[0, -1] < table.losses[0, 0]
    # The extra evaluations put the RNG back (dropout is on, data shuffled): the training is the
    # one a run without the callback makes.
    plain = make_trainer(gpt2_path, tok, data, tmp_path / "plain", per_device_train_batch_size=4,
                         lr_scheduler_type="constant")
    plain.train()
    assert plain.evaluate()["eval_loss"] == rec.final_eval_loss


def test_geometric_sizes(gpt2_path, tok, tmp_path):
    train = tokenize_lm(make_text_dataset(450, seed=5, max_words=8), tok)
    ev = tokenize_lm(make_text_dataset(8, seed=6, max_words=8), tok)
    cb = LensLLMCallback(eval_at_examples="geometric", ntk_probe=False)
    trainer = make_trainer(gpt2_path, tok, (train, ev), tmp_path, callbacks=[cb], per_device_train_batch_size=50,
                           num_train_epochs=2)
    trainer.train()
    rec = record_of(tmp_path)
    assert rec["stream"] == {"eval_at_examples": [200, 400]}  # sizes in the first pass only
    [warning] = rec["warnings"]  # a linear schedule over two epochs: the points are not nested runs' ends
    assert "lr_scheduler_type='linear'" in warning and "2 passes" in warning and "12-19 %" in warning
    assert [(e["examples_seen"], e["at_examples"]) for e in rec["evaluations"]] == [
        (0, None), (200, 200), (400, 400), (900, None)]


def test_gradient_accumulation(gpt2_path, tok, data, tmp_path):
    cb = LensLLMCallback(eval_at_examples=[16], eval_on_start=False, probe_examples=4)
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, callbacks=[cb], per_device_train_batch_size=4,
                           gradient_accumulation_steps=2, include_num_input_tokens_seen=True)
    trainer.train()
    rec = record_of(tmp_path)
    assert rec["effective_batch_size"] == 8 and rec["training"]["gradient_accumulation_steps"] == 2
    assert [(e["step"], e["examples_seen"]) for e in rec["evaluations"]] == [(2, 16), (6, 48)]
    assert rec["ntk"]["t"] == 6
    tokens = [e["tokens_seen"] for e in rec["evaluations"]]
    assert 0 < tokens[0] < tokens[1] == trainer.state.num_input_tokens_seen


def test_dict_of_eval_sets(gpt2_path, tok, data, tmp_path):
    evals = {"small": data[1].select(range(8)), "big": data[1]}
    cb = LensLLMCallback(eval_name="big", probe_examples=4)
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, callbacks=[cb], eval_dataset=evals,
                           eval_strategy="steps", eval_steps=3)
    trainer.train()
    rec = record_of(tmp_path)
    assert rec["metric"] == "eval_big_loss" and rec["dataset"]["eval_num_rows"] == 24
    assert [e["step"] for e in rec["evaluations"]] == [3, 6]  # one entry per step, both sets merged
    last = rec["evaluations"][-1]
    assert {"eval_small_loss", "eval_big_loss"} <= set(last["metrics"])
    assert rec["final_eval_loss"] == last["metrics"]["eval_big_loss"]
    assert rec["ntk"]["k"] == 4 and rec["ntk"]["F"] is not None
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "x", eval_dataset=evals)
    LensLLMCallback(eval_name="nope").bind(trainer)
    with pytest.raises(CallbackError, match="eval_name='nope'"):  # bound: checked before any step
        trainer.train()
    assert trainer.state.global_step == 0
    # Not bound, the names show only in the metrics: the record says which there were.
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "y", eval_dataset=evals, max_steps=2,
                           callbacks=[LensLLMCallback(eval_name="nope", ntk_probe=False)])
    trainer.train()
    rec = record_of(tmp_path / "y")
    assert rec["status"] == "failed" and "eval_name=" in rec["error"]
    assert "eval_big_loss, eval_small_loss" in rec["error"]


def test_dict_of_eval_sets_without_eval_name_takes_the_first(gpt2_path, tok, data, tmp_path):
    evals = {"small": data[1].select(range(8)), "big": data[1]}
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, eval_dataset=evals, max_steps=2,
                           callbacks=[LensLLMCallback(probe_examples=4)])
    trainer.train()
    rec = record_of(tmp_path)
    assert rec["metric"] == "eval_small_loss" and rec["dataset"]["eval_num_rows"] == 8
    assert rec["status"] == "complete" and rec["ntk"]["F"] is not None


def test_same_final_loss_with_and_without_the_probe(gpt2_path, tok, data, tmp_path):
    from transformers import AutoModelForCausalLM

    losses = []
    for i, callbacks in enumerate(([], [LensLLMCallback(ntk_probe=False)], [LensLLMCallback(probe_examples=16)])):
        # Dropout on, shuffled data: any RNG the probe consumed would change the result.
        model = AutoModelForCausalLM.from_pretrained(gpt2_path, resid_pdrop=0.2, attn_pdrop=0.2, embd_pdrop=0.2)
        trainer = make_trainer(gpt2_path, tok, data, tmp_path / str(i), callbacks=callbacks, model=model,
                               num_train_epochs=2)
        trainer.train()
        losses.append(trainer.evaluate()["eval_loss"])
        assert all(p.grad is None for p in trainer.model.parameters())
    assert losses[0] == losses[1] == losses[2]
    assert record_of(tmp_path / "2")["ntk"]["F"] is not None


def test_peft_lora(gpt2_path, tok, data, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(gpt2_path),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.1,
                                      task_type="CAUSAL_LM"))
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, callbacks=[LensLLMCallback(probe_examples=4)],
                           model=model)
    trainer.train()
    rec = record_of(tmp_path)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert rec["adapter"]["peft_type"] == "LORA" and rec["adapter"]["r"] == 4 and rec["adapter"]["lora_alpha"] == 8
    assert rec["adapter"]["target_modules"] == ["c_attn"] and rec["adapter"]["trainable_parameters"] == trainable
    assert rec["model"]["id"] == gpt2_path and rec["model"]["trainable_parameters"] == trainable
    assert rec["ntk"]["n_params"] == trainable and rec["ntk"]["zero_gradient_parameters"] == 2
    assert rec["status"] == "complete" and rec["ntk"]["F"] > 0
    # The key's adapter part: the records module's hash of the active adapter's config, or the planner's own.
    assert rec["key"]["adapter"] == adapter_hash(model.peft_config["default"]) is not None
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "given", model=model, max_steps=1,
                           callbacks=[LensLLMCallback(ntk_probe=False, adapter_hash="planned")])
    trainer.train()
    assert read_record(tmp_path / "given" / "lensllm_record.json").key.adapter == "planned"


def test_seq2seq_trainer_with_t5(tok, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, Seq2SeqTrainer, Seq2SeqTrainingArguments

    model = AutoModelForSeq2SeqLM.from_pretrained(make_tiny_t5(tmp_path / "t5"))
    train = tokenize_seq2seq(make_text_dataset(24, seed=7), tok)
    ev = tokenize_seq2seq(make_text_dataset(8, seed=8), tok)
    args = Seq2SeqTrainingArguments(str(tmp_path / "out"), per_device_train_batch_size=8, max_steps=3,
                                    learning_rate=1e-3, save_strategy="no", use_cpu=True, disable_tqdm=True,
                                    eval_strategy="steps", eval_steps=3)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train, eval_dataset=ev,
                             data_collator=seq2seq_collator(tok, model), callbacks=[LensLLMCallback(probe_examples=4)])
    trainer.train()
    rec = record_of(tmp_path / "out")
    assert rec["status"] == "complete" and rec["model"]["architecture"] == "T5ForConditionalGeneration"
    assert rec["ntk"]["method"] == "loop" and rec["ntk"]["F"] >= 0 and rec["final_eval_loss"] > 0


def test_models_built_from_configs_get_distinct_ids_and_a_warning(tok, data, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from tiny_models import VOCAB_SIZE

    store, ids = tmp_path / "store", []
    for n_layer, seed in ((2, 0), (4, 0), (2, 1)):  # two sizes, and one size initialised differently
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=32, n_head=2, vocab_size=VOCAB_SIZE,
                                           n_positions=64, pad_token_id=0))
        cb = LensLLMCallback(store=store, ntk_probe=False)
        make_trainer(None, tok, data, tmp_path / f"out{n_layer}{seed}", callbacks=[cb], model=model,
                     max_steps=1).train()
        rec = read_record(cb.record_path)
        assert rec.model["id"].startswith("GPT2LMHeadModel-") and rec.model["name_or_path"] is None
        assert any("model_name=" in w and rec.model["id"] in w for w in rec.warnings)
        ids.append(rec.model["id"])
    assert len(set(ids)) == 3 and len(records_in(store)) == 3  # no record overwrote another
    # The same model again gets the same id; a name given wins, without a warning.
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB_SIZE, n_positions=64,
                                       pad_token_id=0))
    for cb, expected in ((LensLLMCallback(ntk_probe=False), ids[0]),
                         (LensLLMCallback(ntk_probe=False, model_name="mine"), "mine")):
        make_trainer(None, tok, data, tmp_path / "again", callbacks=[cb], model=model, max_steps=1,
                     learning_rate=0.0).train()
        assert cb.record.model["id"] == expected and (expected == "mine") == (cb.record.warnings == [])


def test_stream_mode_warns_when_points_are_not_nested_runs(gpt2_path, tok, data, tmp_path):
    cases = {("constant", 1): 0, ("constant_with_warmup", 1): 0, ("linear", 1): 1, ("cosine", 1): 1,
             ("constant", 2): 1}
    for (schedule, epochs), n_warnings in cases.items():
        cb = LensLLMCallback(eval_at_examples=[8], ntk_probe=False, eval_on_start=False)
        trainer = make_trainer(gpt2_path, tok, (data[0].select(range(8)), data[1].select(range(4))),
                               tmp_path / f"{schedule}{epochs}", callbacks=[cb], num_train_epochs=epochs,
                               lr_scheduler_type=schedule)
        trainer.train()
        stream = [w for w in cb.record.warnings if w.startswith("stream mode")]
        assert len(stream) == n_warnings, (schedule, epochs, stream)
        if stream:
            assert "12-19 %" in stream[0] and "docs/callback.md" in stream[0]
            assert (f"lr_scheduler_type={schedule!r} decays" in stream[0]) == (schedule != "constant")
            assert ("2 passes" in stream[0]) == (epochs == 2)
        assert record_of(tmp_path / f"{schedule}{epochs}")["warnings"] == cb.record.warnings


# -- bad input ----------------------------------------------------------------------------------


def test_no_eval_dataset_fails_before_training_unless_allowed(gpt2_path, tok, data, tmp_path):
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "a", eval_dataset=None)
    LensLLMCallback().bind(trainer)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(CallbackError) as error:
        trainer.train()
    assert "eval_dataset=" in str(error.value) and "allow_no_eval=True" in str(error.value)
    assert "\n" not in str(error.value) and isinstance(error.value, LensLLMError)
    assert trainer.state.global_step == 0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    # Not bound: the evaluation the probe asks for before step 1 meets the Trainer's own error.
    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "c", callbacks=[LensLLMCallback()], eval_dataset=None)
    with pytest.raises(ValueError, match="requires an eval_dataset"):
        trainer.train()
    assert trainer.state.global_step == 0 and record_of(tmp_path / "c")["status"] == "interrupted"

    trainer = make_trainer(gpt2_path, tok, data, tmp_path / "b", callbacks=[LensLLMCallback(allow_no_eval=True)],
                           eval_dataset=None, logging_strategy="steps", logging_steps=2)
    trainer.train()
    rec = record_of(tmp_path / "b")
    assert rec["status"] == "complete" and rec["evaluations"] == [] and rec["final_eval_loss"] is None
    assert rec["ntk"] is None and rec["train_loss"] > 0
    assert [p["step"] for p in rec["train_curve"]] == [2, 4, 6]


def test_unwritable_output_dir_or_store_fails_before_training(gpt2_path, tok, data, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(RecordError) as error:  # given to the Trainer: fails at init
        make_trainer(gpt2_path, tok, data, tmp_path / "out", callbacks=[LensLLMCallback(store=blocker / "store")])
    assert "cannot write run records" in str(error.value) and "\n" not in str(error.value)

    out = tmp_path / "gone"
    trainer = make_trainer(gpt2_path, tok, data, out)  # the Trainer makes its output_dir at init...
    out.rmdir()
    out.write_text("...and something replaced it with a file")
    trainer.add_callback(LensLLMCallback())  # added late: fails at train begin
    with pytest.raises(RecordError, match="output_dir or store"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_bad_arguments():
    with pytest.raises(CallbackError, match="'geometric' or a list"):
        LensLLMCallback(eval_at_examples="log")
    with pytest.raises(CallbackError, match="whole numbers > 0"):
        LensLLMCallback(eval_at_examples=[100, -1])
    with pytest.raises(CallbackError, match="at least 2"):
        LensLLMCallback(probe_examples=1)
    with pytest.raises(CallbackError, match="model_name='': must not be empty") as error:
        LensLLMCallback(model_name="")
    assert (error.value.key, error.value.value) == ("model_name", "")
    with pytest.raises(CallbackError, match="ntk_probe=1: must be true or false"):
        LensLLMCallback(ntk_probe=1)
    with pytest.raises(CallbackError, match="probe_memory_mb='big': must be a number"):
        LensLLMCallback(probe_memory_mb="big")
    with pytest.raises(CallbackError, match="transformers.Trainer"):
        LensLLMCallback().bind(object())


def test_no_stack_walking_or_excepthook():
    # The callback works from what the events hand it and an explicitly given Trainer.
    for path in (SRC / "callbacks").glob("*.py"):
        text = path.read_text()
        for word in ("sys._getframe", "inspect.stack", "f_back", "sys.excepthook", "current_flos",
                     "_remove_unused_columns", "_get_collator_with_removed_columns", "._fingerprint"):
            assert word not in text, f"{path.name} uses {word}"


def test_nan_eval_loss_is_recorded_honestly(gpt2_path, tok, data, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gpt2_path)
    with torch.no_grad():
        model.lm_head.weight[5, 0] = float("nan")
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, callbacks=[LensLLMCallback(probe_examples=4)], model=model,
                           max_steps=2)
    trainer.train()  # no crash
    rec = record_of(tmp_path)
    assert rec["status"] == "failed" and "NaN" in rec["error"] and "learning rate" in rec["error"]
    assert rec["final_eval_loss"] is None and rec["evaluations"][-1]["eval_loss"] is None
    assert "not finite" in rec["ntk"]["error"] and rec["ntk"]["F"] is None
    assert any("NaN" in w for w in rec["warnings"])


def test_record_is_interrupted_while_running_and_failed_after_an_error(gpt2_path, tok, data, tmp_path):
    from transformers import TrainerCallback

    seen = []

    class Peek(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(record_of(tmp_path)["status"])
            if state.global_step == 2:
                raise RuntimeError("disk on fire")

    cb = LensLLMCallback(probe_examples=4)
    trainer = make_trainer(gpt2_path, tok, data, tmp_path, callbacks=[cb, Peek()])
    with pytest.raises(RuntimeError):
        trainer.train()
    assert seen == ["interrupted", "interrupted"]
    assert record_of(tmp_path)["status"] == "interrupted"  # a crash without a word leaves this
    cb.mark_failed(RuntimeError("disk on fire"))  # what a planner that catches errors calls
    rec = record_of(tmp_path)
    assert rec["status"] == "failed" and rec["error"] == "RuntimeError: disk on fire"


SCRIPT_PRELUDE = f"""
import sys, torch
sys.path.insert(0, {str(TESTS)!r})
from tiny_models import lm_collator, make_text_dataset, make_tokenizer, tokenize_lm
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
from lensllm_hf import LensLLMCallback
torch.set_num_threads(1)
model_path, out, store = sys.argv[1], sys.argv[2], sys.argv[3]
tok = make_tokenizer()
train = tokenize_lm(make_text_dataset(32, seed=1), tok)
ev = tokenize_lm(make_text_dataset(8, seed=2), tok)
"""


def test_uncaught_error_in_a_script_leaves_the_record_interrupted(gpt2_path, tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(SCRIPT_PRELUDE + textwrap.dedent("""
        collate = lm_collator(tok)
        calls = []
        def flaky(features):
            calls.append(1)
            if len(calls) == 4:
                raise ValueError("corrupt example 17")
            return collate(features)
        args = TrainingArguments(out, per_device_train_batch_size=4, max_steps=6, save_strategy="no", use_cpu=True,
                                 disable_tqdm=True)
        Trainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args, train_dataset=train,
                eval_dataset=ev, data_collator=flaky, callbacks=[LensLLMCallback(ntk_probe=False)]).train()
    """))
    proc = subprocess.run([sys.executable, str(script), gpt2_path, str(tmp_path / "out"), ""], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "corrupt example 17" in proc.stderr  # the usual traceback still shows
    rec = record_of(tmp_path / "out")  # started, not finished: true (no excepthook is replaced)
    assert rec["status"] == "interrupted" and rec["error"] is None and rec["finished_at"] is None


def test_two_processes_write_exactly_one_record(gpt2_path, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT_PRELUDE + textwrap.dedent("""
        args = TrainingArguments(out, per_device_train_batch_size=4, max_steps=3, save_strategy="no", use_cpu=True,
                                 disable_tqdm=True, learning_rate=1e-3)
        Trainer(model=AutoModelForCausalLM.from_pretrained(model_path), args=args, train_dataset=train,
                eval_dataset=ev, data_collator=lm_collator(tok),
                callbacks=[LensLLMCallback(store=store, probe_examples=4)]).train()
        sys.stdout.write(f"process {args.process_index} of {args.world_size}\\n")  # one write: no interleaving
        sys.stdout.flush()
        # A clean shutdown: a process that exits with its process group alive may abort in
        # gloo's threads ("terminate called without an active exception") while the other writes.
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port: other test runs on this machine may hold 29500
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    # accelerate 1.15 runs `--cpu --num_processes 2` as one process unless mpirun is set up;
    # torchrun (--multi_gpu) with use_cpu=True gives two CPU processes over gloo.
    proc = subprocess.run(["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port, str(script), gpt2_path,
                           str(tmp_path / "out"), str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 0 of 2" in proc.stdout and "process 1 of 2" in proc.stdout
    files = records_in(tmp_path / "store")
    assert len(files) == 1 and not any(".tmp" in name for name in os.listdir(tmp_path / "store"))
    rec = read_record(tmp_path / "store" / files[0])
    assert rec.status == "complete" and rec.world_size == 2 and rec.effective_batch_size == 8
    assert rec.train_size == 32 and [e.examples_seen for e in rec.evaluations] == [24]
    assert rec.ntk["F"] is not None and rec.total_flos > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_is_unchanged_bound_or_not(tmp_path):
    # On a GPU (CUDA RNG, probe on the device): no callback, a free one and a bound one train alike.
    # Plain lists of token ids and a hand-written collator: no `datasets` needed on the GPU machine.
    import random

    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    def examples(n, seed):
        rng = random.Random(seed)
        return [{"input_ids": [rng.randrange(3, 51) for _ in range(rng.randint(8, 16))]} for _ in range(n)]

    def collate(features):
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), n, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}

    train, ev = examples(64, 1), examples(24, 2)
    losses, recs = [], []
    for kind in ("plain", "free", "bound"):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=51, n_positions=64,
                                           resid_pdrop=0.2, attn_pdrop=0.2, embd_pdrop=0.2))
        args = TrainingArguments(str(tmp_path / kind), per_device_train_batch_size=4, max_steps=12, learning_rate=1e-3,
                                 seed=0, save_strategy="no", disable_tqdm=True, logging_strategy="no",
                                 report_to="none", eval_strategy="steps", eval_steps=5, full_determinism=True)
        cb = LensLLMCallback(probe_examples=8, eval_at_examples=[16, 32], model_name="tiny")
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=ev, data_collator=collate,
                          callbacks=[cb] if kind == "free" else [])
        if kind == "bound":
            cb.bind(trainer)
        trainer.train()
        assert next(trainer.model.parameters()).is_cuda
        losses.append(trainer.evaluate()["eval_loss"])
        if kind != "plain":
            rec = record_of(tmp_path / kind)
            for key in ("wall_time_s", "started_at", "finished_at"):
                rec.pop(key)
            rec["ntk"].pop("seconds")
            for e in rec["evaluations"]:
                for m in [m for m in e["metrics"] if m.endswith(("_runtime", "_per_second"))]:
                    e["metrics"].pop(m)
            recs.append(rec)
    assert losses[0] == losses[1] == losses[2]
    assert recs[0] == recs[1] and recs[0]["status"] == "complete" and recs[0]["ntk"]["F"] is not None
    assert [e["step"] for e in recs[0]["evaluations"]] == [0, 4, 5, 8, 10, 12]
