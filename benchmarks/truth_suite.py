"""Truth suite: selection problems on this machine's CPU whose answers are known.

Run by hand (it is not a CI test, and nothing in the package defaults is tuned to it)::

    python benchmarks/truth_suite.py [--cache lensllm_out/truth] [--json OUT] [--only NAME ...]

Six tiny causal LMs of four architectures (GPT-2, Llama, GPT-NeoX, OPT; 2-4 layers, d_model
32-64, 22k-211k parameters) are pre-trained from seeds on different mixes and amounts of
generated text (number words in sentences, digits and sums, word lists), so that they start a
task knowing different things, as Hub models do. The tasks are generated too (five formats
none of them saw: digits -> words, words -> digits, sums, a substitution code, a noun's fixed
colour). Each of the six problems runs the real selection with :class:`lensllm_hf.LensLLMSelector` on small nested
subsets up to a budget, AND fine-tunes every candidate on the whole target-size training set
with the same settings (two seeds): the mean test loss of those runs is the truth the
selection is judged against, and their seed spread says how sure that truth is.

Per problem it reports RelAcc and PearCorr of the selector's ranking, the pick's ``p_best``
(and the Brier score of all of them), how many candidates' intervals hold their true loss at
the target, and an ablation of the laws: ``lensllm``, ``rectified`` and ``default`` (and the
observed baselines for reference) rank the same store (``records.load_table`` then
``methods.rank``), each scored by its median prediction error at the target and its pick.
Values a package version does not produce yet (``p_best``) print as ``n/a``.

Everything is cached under ``--cache``: pre-trained models by a stamp of their settings, each
problem's run records in a store named by a stamp of the problem, and the truth runs in
stores shared by problems with the same task and target (the selector skips runs already
recorded). A fresh run takes 4-10 minutes on two busy cores; a second run only fits and prints (seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lensllm_hf.demo import number_words, word_tokenizer

#: Bump when the generated texts or the training recipe change: everything is rebuilt.
SUITE_VERSION = 1
SEED = 0
MAX_LENGTH = 32
EVAL_ROWS = 200
PRETRAIN_ROWS = 8_000
PRETRAIN_BATCH = 32
#: Every fine-tuning run of every problem, subsets and truth alike.
TRAINING_ARGS: dict[str, Any] = {"per_device_train_batch_size": 16, "per_device_eval_batch_size": 100,
                                 "num_train_epochs": 1, "learning_rate": 2e-3, "warmup_steps": 0,
                                 "weight_decay": 0.0}
#: The methods whose predictions are scored against the truth (the lensllm law ablation), and
#: observed baselines shown for reference (they pick, they do not predict).
LAW_METHODS = ("lensllm", "rectified", "default")
REFERENCE_METHODS = ("subtuning", "zeroshot")

# -- text --------------------------------------------------------------------------------------

#: Every word the numbers 0-999 are written with (the demo writes them the same way).
NUMBER_WORDS = sorted({word for n in range(1000) for word in number_words(n).split()})

_NOUNS = "cat dog bird tree house river road car book apple stone child farmer boat hill lamp cup".split()
_ADJ = "red big small old new quiet green tall happy dark warm cold".split()
_VERBS = "sees finds carries likes watches counts paints keeps".split()
_GLUE = "the near in words : . as digits plus is and make code then there are".split()
#: The cipher task's fixed substitution of the list words (a seeded permutation).
_CODE = dict(zip(_NOUNS + _ADJ, random.Random(7).sample(_NOUNS + _ADJ, len(_NOUNS + _ADJ))))


def _words_list(rng: random.Random, low: int, high: int) -> list[str]:
    return [rng.choice(_NOUNS + _ADJ) for _ in range(rng.randint(low, high))]


# Tasks: what the candidates are fine-tuned on. Four formats, none of them seen in pre-training.
def task_spell(rng: random.Random) -> str:
    k = rng.randrange(1000)
    return f"{k} in words : {number_words(k)} ."


def task_read(rng: random.Random) -> str:
    k = rng.randrange(1000)
    return f"{number_words(k)} as digits : {k} ."


def task_add(rng: random.Random) -> str:
    a, b = rng.randrange(100), rng.randrange(100)
    return f"{a} plus {b} is {a + b} ."


def task_cipher(rng: random.Random) -> str:
    words = _words_list(rng, 3, 5)
    return f"code {' '.join(words)} : {' '.join(_CODE[w] for w in words)} ."


#: The lookup task's fixed colour of each noun (a seeded draw): 16 facts to learn.
_COLOUR = dict(zip(_NOUNS, random.Random(11).choices(_ADJ, k=len(_NOUNS))))


def task_lookup(rng: random.Random) -> str:
    """A random noun, then its fixed colour: the noun's draw (ln 17 nats over the 5 tokens
    predicted, 0.567 a token) is a floor no model passes, and the 17 facts are learnt within a
    few thousand examples."""
    noun = rng.choice(_NOUNS)
    return f"the {noun} is {_COLOUR[noun]} ."


TASKS: dict[str, Callable[[random.Random], str]] = {
    "spell": task_spell, "read": task_read, "add": task_add, "cipher": task_cipher, "lookup": task_lookup}


# Pre-training corpora: related to the tasks in different ways, never the task format itself.
def corpus_web(rng: random.Random) -> str:
    """Plain sentences that use number words, never digits (the demo's 'web' text)."""
    return (f"the {rng.choice(_ADJ)} {rng.choice(_NOUNS)} {rng.choice(_VERBS)} {number_words(rng.randrange(1, 1000))} "
            f"{rng.choice(_NOUNS)}s near the {rng.choice(_NOUNS)} .")


def corpus_numeric(rng: random.Random) -> str:
    """Digits in context and sums in another template than the task's."""
    if rng.random() < 0.5:
        a, b = rng.randrange(100), rng.randrange(100)
        return f"{a} and {b} make {a + b} ."
    return f"there are {rng.randrange(1000)} {rng.choice(_NOUNS)}s near the {rng.choice(_NOUNS)} ."


def corpus_lists(rng: random.Random) -> str:
    """Word lists, sometimes repeated (copying, not reversing)."""
    words = " ".join(_words_list(rng, 3, 5))
    return f"{words} then {words} ." if rng.random() < 0.5 else f"{words} ."


CORPORA: dict[str, Callable[[random.Random], str]] = {
    "web": corpus_web, "numeric": corpus_numeric, "lists": corpus_lists}


def texts(make: Callable[[random.Random], str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [make(rng) for _ in range(n)]


def mixture(mix: dict[str, float], n: int, seed: int) -> list[str]:
    """``n`` pre-training texts drawn from the corpora in the proportions of ``mix``."""
    rng = random.Random(seed)
    names = sorted(mix)
    weights = [mix[name] for name in names]
    return [CORPORA[rng.choices(names, weights)[0]](rng) for _ in range(n)]


# -- candidates and problems -------------------------------------------------------------------


@dataclass(frozen=True)
class Pretrained:
    """One candidate: an architecture and size, and how much of which text it was pre-trained on."""

    name: str
    family: str
    config: dict[str, Any]
    mix: dict[str, float]
    steps: int
    lr: float = 3e-3


@dataclass(frozen=True)
class Problem:
    """One selection: a task, its candidates, the subsets bought and the target size."""

    name: str
    task: str
    candidates: tuple[str, ...]
    min_size: int
    budget: int
    target: int
    why: str = ""
    #: Sizes between the budget and the target also fine-tuned (first truth seed only), to show
    #: where the curve goes; they are not part of the selection's store nor of its stamp.
    truth_curve: tuple[int, ...] = ()


CANDIDATES: tuple[Pretrained, ...] = (
    Pretrained("gpt2-web", "gpt2", {"n_embd": 32, "n_layer": 2, "n_head": 2}, {"web": 1.0}, steps=300),
    Pretrained("llama-mix", "llama", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                      "num_attention_heads": 4, "num_key_value_heads": 2},
               {"web": 1.0, "numeric": 1.0, "lists": 1.0}, steps=300),
    Pretrained("neox-numeric", "gpt_neox", {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3,
                                            "num_attention_heads": 4}, {"numeric": 1.0}, steps=250),
    Pretrained("opt-lists", "opt", {"hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
                                    "num_attention_heads": 4, "word_embed_proj_dim": 64},
               {"lists": 2.0, "web": 1.0}, steps=200),
    Pretrained("gpt2-wide-brief", "gpt2", {"n_embd": 64, "n_layer": 4, "n_head": 4}, {"web": 1.0}, steps=40),
    Pretrained("llama-small", "llama", {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                        "num_attention_heads": 2, "num_key_value_heads": 1},
               {"web": 1.0, "numeric": 1.0, "lists": 1.0}, steps=120),
)

ADD_CANDIDATES = ("llama-mix", "neox-numeric", "opt-lists", "llama-small", "gpt2-web")
PROBLEMS: tuple[Problem, ...] = (
    Problem("spell", "spell", ("gpt2-web", "llama-mix", "neox-numeric", "opt-lists", "gpt2-wide-brief"),
            min_size=50, budget=400, target=6400,
            why="digits -> number words; the web text knows the words, the numeric text the digits"),
    Problem("read", "read", ("gpt2-web", "llama-mix", "neox-numeric", "llama-small", "gpt2-wide-brief"),
            min_size=100, budget=800, target=6400,
            why="number words -> digits, the reverse mapping; the longest curves"),
    Problem("add", "add", ADD_CANDIDATES, min_size=50, budget=400, target=6400,
            why="two-digit sums; neox-numeric saw sums in another template"),
    Problem("cipher", "cipher", ("gpt2-web", "llama-mix", "opt-lists", "llama-small", "gpt2-wide-brief"),
            min_size=25, budget=200, target=6400,
            why="a word-for-word substitution code; llama-mix's curve stays flat up to the budget (a "
                "pre-power phase), then it ends clearly best"),
    Problem("add-short", "add", ADD_CANDIDATES, min_size=6, budget=24, target=6400,
            why="curves where little is known: 3 tiny subsets + zero-shot, extrapolated 8 doublings "
                "(shares the truth runs of 'add')"),
    Problem("floor", "lookup", ("gpt2-web", "llama-mix", "neox-numeric", "opt-lists", "llama-small"),
            min_size=128, budget=512, target=6144, truth_curve=(1536, 3072),
            why="a noun and its fixed colour: the loss reaches the floor of the noun's draw inside the target; "
                "3 subsets + zero-shot, the target 12x the budget"),
)

#: The truth is the mean test loss of the target-size fine-tune over these seeds (data order and
#: initialisation of the run); their spread says how far apart two candidates must be to differ.
TRUTH_SEEDS = (0, 1)


def stamp(value: Any) -> str:
    """A short hash of settings: cached pieces are reused only while their settings hold."""
    text = json.dumps([SUITE_VERSION, value], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


# -- building models ---------------------------------------------------------------------------


def vocabulary() -> list[str]:
    """Every token of the suite: its words and the ten digits."""
    return ["<pad>", "<unk>", "<eos>", *sorted({*NUMBER_WORDS, *_NOUNS, *(f"{w}s" for w in _NOUNS),
                                               *_ADJ, *_VERBS, *_GLUE, *"0123456789"})]


def model_folder(spec: Pretrained) -> str:
    """``name-stamp``: the stamp covers everything the pre-trained weights depend on."""
    return f"{spec.name}-" + stamp({"spec": asdict(spec), "vocab": vocabulary(), "rows": PRETRAIN_ROWS,
                                    "batch": PRETRAIN_BATCH, "max_length": MAX_LENGTH, "seed": SEED})


def build_tokenizer():
    """A word-level tokenizer over every word of the suite and the ten digits (one token each)."""
    return word_tokenizer(vocabulary()[3:])  # the demo's builder; vocabulary() starts with its 3 special tokens


def build_model(spec: Pretrained, root: Path, log: Callable[[str], None]) -> str:
    """Pre-train ``spec`` (or reuse the copy built with the same settings); returns its folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = root / model_folder(spec)
    if (path / "built.json").exists():
        return str(path)
    t0 = time.perf_counter()
    tokenizer = build_tokenizer()
    config = AutoConfig.for_model(spec.family, vocab_size=len(tokenizer), max_position_embeddings=64, n_positions=64,
                                  pad_token_id=0, bos_token_id=2, eos_token_id=2, tie_word_embeddings=True,
                                  **spec.config)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config)
    if spec.steps:
        corpus = mixture(spec.mix, PRETRAIN_ROWS, SEED + 3)
        _pretrain(model, tokenizer, corpus, spec.steps, spec.lr)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    params = sum(p.numel() for p in model.parameters())
    # Written last: a build killed midway is redone, never half-used.
    (path / "built.json").write_text(json.dumps({"spec": asdict(spec), "parameters": params}) + "\n")
    log(f"built {spec.name} ({spec.family}, {params / 1e3:.0f}k parameters, {spec.steps} steps on "
        f"{'+'.join(sorted(spec.mix))}) in {time.perf_counter() - t0:.1f}s")
    return str(path)


def _pretrain(model, tokenizer, corpus: list[str], steps: int, lr: float) -> None:
    """A plain causal-LM loop (AdamW, warm-up then cosine): faster than a Trainer for this size."""
    import torch

    enc = tokenizer(corpus, truncation=True, max_length=MAX_LENGTH, padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(corpus), (PRETRAIN_BATCH,), generator=gen)
        width = int(mask[rows].sum(1).max())
        out = model(input_ids=ids[rows, :width], attention_mask=mask[rows, :width], labels=labels[rows, :width])
        out.loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


# -- one problem -------------------------------------------------------------------------------


def run_problem(problem: Problem, cache: Path, paths: dict[str, str], log: Callable[[str], None],
                progress: bool) -> dict[str, Any]:
    """Select on the subsets, fine-tune every candidate on the target for the truth, score both."""
    import datasets

    from lensllm_hf import LensLLMSelector
    from lensllm_hf import records
    from lensllm_hf._utils import one_line
    from lensllm_hf.records import load_table

    # How this package version names record files: a version that names them differently would
    # not find the cached runs and would mix two names for one run in a store, so it gets new stores.
    naming = records.RunKey("probe", 1, 0, "probe").name
    data = {"training": TRAINING_ARGS, "eval_rows": EVAL_ROWS, "max_length": MAX_LENGTH, "record_naming": naming}
    settings = {"problem": {k: v for k, v in asdict(problem).items() if k not in ("why", "truth_curve")},
                "models": {n: Path(paths[n]).name for n in problem.candidates}, **data}
    folder = cache / "problems" / f"{problem.name}-{stamp(settings)}"
    # Truth runs depend on the task, the target and the models only: problems that share them
    # share the runs. Records are named by candidate, so the stamp covers every model's build.
    truth_settings = {"task": problem.task, "target": problem.target,
                      "models": sorted(model_folder(spec) for spec in CANDIDATES), **data}
    truth_store = cache / "truth" / f"{problem.task}-{problem.target}-{stamp(truth_settings)}"
    make = TASKS[problem.task]
    train = datasets.Dataset.from_dict({"text": texts(make, problem.target, SEED + 11)})
    evalset = datasets.Dataset.from_dict({"text": texts(make, EVAL_ROWS, SEED + 12)})
    candidates = [{"model": paths[name], "name": name} for name in problem.candidates]
    common = {"training_args": TRAINING_ARGS, "max_length": MAX_LENGTH, "seed": SEED, "progress": progress}

    t0 = time.perf_counter()
    selector = LensLLMSelector(candidates, train, evalset, target_size=problem.target, budget=problem.budget,
                               min_size=problem.min_size, store=folder / "store", output_dir=folder, **common)
    result = selector.run()
    t_select = time.perf_counter() - t0
    # The truth: each candidate fine-tuned on the whole target set (the subsets above are the first
    # rows of its seeded shuffle), in a store of its own so the selection never sees it.
    runs: dict[str, list[float]] = {}
    beyond: dict[str, dict[int, float]] = {}
    for seed in TRUTH_SEEDS:
        truth_selector = LensLLMSelector(candidates, train, evalset, target_size=2 * problem.target,
                                         sizes=sorted({problem.target // 4, problem.target // 2, *problem.truth_curve,
                                                       problem.target}),
                                         zero_shot=False, ntk_probe=False, store=truth_store, output_dir=folder,
                                         **{**common, "seed": seed})
        sizes = [*problem.truth_curve, problem.target] if seed == TRUTH_SEEDS[0] else [problem.target]
        for rec in truth_selector.train(sizes=sizes):
            if rec.status != "complete" or rec.final_eval_loss is None:
                continue
            if rec.train_size == problem.target:
                runs.setdefault(rec.model_id, []).append(float(rec.final_eval_loss))
            else:
                beyond.setdefault(rec.model_id, {})[int(rec.train_size)] = float(rec.final_eval_loss)
    truth = {m: sum(v) / len(v) for m, v in runs.items() if len(v) == len(TRUTH_SEEDS)}
    spread = max((max(v) - min(v) for v in runs.values()), default=0.0)
    # The answer is sure when every seed's truth names the same best; else the problem has tied
    # bests, and a pick of any of them is right.
    seed_bests = sorted({min(truth, key=lambda m: runs[m][i]) for i in range(len(TRUTH_SEEDS))}) if truth else []
    t_truth = time.perf_counter() - t0 - t_select
    log(f"{problem.name}: selection {t_select:.0f}s, truth runs {t_truth:.0f}s")

    selection = result.to_dict()
    table = load_table(str(folder / "store"))
    out: dict[str, Any] = {
        "problem": problem.name, "task": problem.task, "why": problem.why, "store": str(folder / "store"),
        "truth_store": str(truth_store), "doublings": math.log2(problem.target / max(selector.sizes_)),
        "sizes": selector.run_sizes_, "target": problem.target, "truth": truth, "truth_runs": runs,
        "truth_curve": beyond, "truth_seed_spread": spread, "truth_gap": _gap(truth), "seed_bests": seed_bests,
        "curves": {m: dict(zip(map(int, table.sizes), map(_num, table.losses[i]))) for i, m in enumerate(table.models)},
        "selector": score(selection, truth, seed_bests),
        "methods": {},
        "seconds": {"selection": round(t_select, 1), "truth": round(t_truth, 1)},
    }
    from lensllm_hf.engine.methods import rank

    runs_info = _run_info(str(folder / "store"), table.models)
    for method in (*LAW_METHODS, *REFERENCE_METHODS):
        try:
            ranked = (rank(table, problem.target, method) if runs_info is None
                      else rank(table, problem.target, method, runs=runs_info))
            ranking = ranked.to_dict()
        except Exception as error:  # a method that cannot rank this store is reported, the others go on
            out["methods"][method] = {"error": one_line(error)}
            continue
        out["methods"][method] = score(ranking, truth, seed_bests)
        notes = sorted({w for r in ranking.get("ranking", []) for w in (r.get("warnings") or [])})
        if notes:
            out["methods"][method]["warnings"] = notes
    return out


def _run_info(store: str, models: Sequence[str]):
    """What the run records tell a method beyond the table (the probe spectrum the ``lensllm``
    law fits t along), by the table's row names."""
    from lensllm_hf import records
    from lensllm_hf.engine.methods.base import run_info

    return run_info(records.table_rows(records.Store(store).records()))


def score(ranking: dict[str, Any], truth: dict[str, float], seed_bests: Sequence[str] = ()) -> dict[str, Any]:
    """Judge one ranking JSON (the ``Ranking.to_dict`` shape) against the true losses at the target.

    ``seed_bests`` are the candidates some truth seed finds best: a pick among them is right.
    """
    if not truth:
        return {"error": "no truth run completed"}
    rows = [r for r in ranking.get("ranking", []) if r.get("status") == "complete" and r.get("model") in truth]
    best = ranking.get("best")
    true = truth
    worst_loss, best_loss = max(true.values()), min(true.values())
    out: dict[str, Any] = {"pick": best, "truly_best": min(true, key=true.get)}
    out["right"] = best is not None and (best in seed_bests or best == out["truly_best"])
    out["rel_acc"] = (100.0 * (worst_loss - true[best]) / (worst_loss - best_loss)
                      if best in true and worst_loss > best_loss else None)
    scores = [r.get("predicted_loss") if r.get("predicted_loss") is not None else r.get("score") for r in rows]
    out["pear_corr"] = _pearson([float(s) for s in scores], [true[r["model"]] for r in rows]) if len(rows) > 2 else None
    pick = next((r for r in rows if r["model"] == best), {})
    out["p_best"] = pick.get("p_best", ranking.get("p_best"))
    probs = {r["model"]: r.get("p_best") for r in rows}
    out["p_best_brier"] = (sum((float(p) - (m == out["truly_best"])) ** 2 for m, p in probs.items())
                           if probs and all(p is not None for p in probs.values()) else None)
    per: dict[str, Any] = {}
    held = counted = 0
    errors = []
    for r in rows:
        m, predicted, interval = r["model"], r.get("predicted_loss"), r.get("interval")
        entry: dict[str, Any] = {"true": true[m], "predicted": predicted, "interval": interval, "p_best": r.get("p_best")}
        if predicted is not None:
            entry["error_pct"] = 100.0 * (predicted - true[m]) / true[m]
            errors.append(abs(entry["error_pct"]))
        if interval:
            # A bound the JSON writes as null is not finite (an overflowing interval).
            lo, hi = (-math.inf if interval[0] is None else interval[0]), (math.inf if interval[1] is None else interval[1])
            entry["covered"] = bool(lo <= true[m] <= hi)
            held += entry["covered"]
            counted += 1
        per[m] = entry
    out["coverage"] = [held, counted] if counted else None
    out["median_abs_error_pct"] = statistics.median(errors) if errors else None
    out["candidates"] = per
    return out


def _gap(truth: dict[str, float]) -> float | None:
    """True loss of the runner-up minus the best's: the margin the known answer has."""
    ordered = sorted(truth.values())
    return ordered[1] - ordered[0] if len(ordered) > 1 else None


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return 100.0 * sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else None


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


# -- report ------------------------------------------------------------------------------------


def _f(value: Any, spec: str = ".1f") -> str:
    return "n/a" if value is None else "inf" if value == math.inf else format(value, spec)


def _cov(value: list[int] | None) -> str:
    return "n/a" if not value else f"{value[0]}/{value[1]}"


def format_report(results: list[dict[str, Any]]) -> str:
    """The tables a person reads: the selector per problem, the law ablation, the candidates."""
    lines = ["Selector (LensLLMSelector, method 'default') against the truth at the target "
             "(truly best: lowest mean true loss over the truth seeds, '+' when another seed names another "
             "best (a tie: picking either is right); gap: runner-up's true loss minus the best's):",
             f"{'problem':<9} {'sizes':<20} {'target':>6}  {'pick':<16} {'truly best':<17} {'gap':>5} "
             f"{'RelAcc':>6} {'PearCorr':>8} {'p_best':>6} {'Brier':>5} {'covered':>7} {'med|err|%':>9}"]
    for r in results:
        s = r["selector"]
        lines.append(f"{r['problem']:<9} {','.join(map(str, r['sizes'])):<20} {r['target']:>6}  {str(s.get('pick')):<16} "
                     f"{str(s.get('truly_best')) + ('+' if len(r['seed_bests']) > 1 else ''):<17} {_f(r['truth_gap'], '.3f'):>5} "
                     f"{_f(s.get('rel_acc')):>6} {_f(s.get('pear_corr')):>8} {_f(s.get('p_best'), '.2f'):>6} "
                     f"{_f(s.get('p_best_brier'), '.2f'):>5} {_cov(s.get('coverage')):>7} {_f(s.get('median_abs_error_pct')):>9}")
    lines.append(_summary("all", [r["selector"] for r in results]))
    methods = (*LAW_METHODS, *REFERENCE_METHODS)
    lines += ["", "Law ablation (records.load_table(store) ranked by methods.rank(table, target, method)); per cell: "
              "median |error| % at the target, RelAcc of the pick, intervals holding the truth:",
              f"{'problem':<9} " + " ".join(f"{m:>22}" for m in methods)]
    for r in results:
        cells = []
        for m in methods:
            s = r["methods"].get(m, {})
            if "error" in s or not s:
                cells.append(f"{'failed':>22}")
            elif m in REFERENCE_METHODS:
                cells.append(f"{'RelAcc ' + _f(s.get('rel_acc'), '.0f'):>22}")
            else:
                cell = f"{_f(s.get('median_abs_error_pct'))}% {_f(s.get('rel_acc'), '.0f')} {_cov(s.get('coverage'))}"
                cells.append(f"{cell:>22}")
        lines.append(f"{r['problem']:<9} " + " ".join(cells))
    for m in methods:
        lines.append(_summary(m, [r["methods"].get(m, {}) for r in results]))
    lines += ["", "Per candidate: true loss at the target (mean over seeds); the selector's prediction, interval, "
              "p_best; the observed curve"]
    for r in results:
        lines.append(f"  {r['problem']} (D = {', '.join(map(str, r['sizes']))}; {r['why']})")
        for m, c in sorted(r["selector"].get("candidates", {}).items(), key=lambda kv: kv[1]["true"]):
            interval = "n/a" if not c.get("interval") else f"[{_f(c['interval'][0], '.3f')}, {_f(c['interval'][1], '.3f')}]"
            curve = " ".join(_f(v, ".3f") for v in r["curves"].get(m, {}).values())
            later = r.get("truth_curve", {}).get(m)
            if later:
                curve += " | " + " ".join(f"{size}: {loss:.3f}" for size, loss in sorted(later.items()))
            lines.append(f"    {m:<16} true {c['true']:.3f}  pred {_f(c['predicted'], '.3f')} {interval:<17} "
                         f"p_best {_f(c.get('p_best'), '.2f'):>5}  curve {curve}")
    return "\n".join(lines)


def _summary(name: str, scores: list[dict[str, Any]]) -> str:
    """One line over the problems: mean RelAcc and PearCorr, pooled coverage, median error."""
    def mean(key: str) -> str:
        vals = [s[key] for s in scores if s.get(key) is not None]
        return _f(sum(vals) / len(vals)) if vals else "n/a"

    held = sum(s["coverage"][0] for s in scores if s.get("coverage"))
    counted = sum(s["coverage"][1] for s in scores if s.get("coverage"))
    errors = sorted(s["median_abs_error_pct"] for s in scores if s.get("median_abs_error_pct") is not None)
    right = sum(1 for s in scores if s.get("right"))
    text = f"  {name:<10} mean RelAcc {mean('rel_acc'):>5}  mean PearCorr {mean('pear_corr'):>5}  picks right {right}/{len(scores)}"
    if counted:
        text += f"  coverage {held}/{counted} ({100 * held / counted:.0f}%)"
    if errors:
        text += f"  median of median |err| {statistics.median(errors):.1f}%"
    if any(s.get("p_best") is not None for s in scores):
        text += f"  mean p_best of picks {mean('p_best')}  mean Brier {mean('p_best_brier')}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="lensllm_out/truth", help="folder of the models and run records")
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--only", nargs="+", choices=[p.name for p in PROBLEMS], help="run only these problems")
    parser.add_argument("--progress", action="store_true", help="show the selector's progress bars")
    args = parser.parse_args(argv)
    from lensllm_hf._utils import check_output_file, one_line
    from lensllm_hf.errors import LensLLMError

    try:
        out = check_output_file(args.json, "JSON results") if args.json else None
        return _run(args, out)
    except LensLLMError as error:
        print(f"truth_suite: {one_line(error)}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, out: Path | None) -> int:
    import torch
    import transformers

    from lensllm_hf._utils import atomic_write_text

    # Tiny models gain nothing from intra-op threads, and the machine is shared.
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    cache = Path(args.cache)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    problems = [p for p in PROBLEMS if not args.only or p.name in args.only]
    needed = {name for p in problems for name in p.candidates}
    paths = {spec.name: build_model(spec, cache / "models", log) for spec in CANDIDATES if spec.name in needed}
    results = [run_problem(p, cache, paths, log, args.progress) for p in problems]
    print(format_report(results))
    elapsed = time.perf_counter() - t0
    print(f"\n{len(results)} problems in {elapsed:.0f}s (cache {cache})")
    if out is not None:
        payload = {"suite_version": SUITE_VERSION, "training_args": TRAINING_ARGS, "truth_seeds": TRUTH_SEEDS,
                   "seconds": round(elapsed, 1), "candidates": [asdict(c) for c in CANDIDATES], "problems": results}
        atomic_write_text(out, json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
