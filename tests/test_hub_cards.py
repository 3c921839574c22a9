"""hub_cards: fits written into model cards, pushed to the Hub and read back.

Every test that talks to "the Hub" runs the real ``huggingface_hub`` client against a local
HTTP server (``tests/hub_server.py``: stdlib ``http.server`` on 127.0.0.1, port 0) that
answers the endpoints the client calls and records what it receives. Nothing leaves the
machine. Card validation: ``ModelCard.validate`` posts to ``/api/validate-yaml``, which the
local server answers by parsing the card with huggingface_hub's own ``ModelCard`` /
``ModelCardData`` (the ``model_index_to_eval_results`` round trip); the tests also run that
round trip directly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.hf_api
import huggingface_hub.utils._http
import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData, constants
from huggingface_hub.repocard_data import model_index_to_eval_results
from hub_server import FakeHub, SilentServer

from lensllm_hf.cli import main
from lensllm_hf.hub_cards import (
    CardError,
    CardFit,
    CardMetadataError,
    HubError,
    HubUnavailableError,
    NetworkError,
    find_fit,
    fits_from_ranking,
    load_fits,
    push_fits,
    push_to_hub_with_fits,
    write_card,
)
from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.hub_cards import published_candidate
from lensllm_hf.engine.laws import LAWS, RectifiedLaw
from lensllm_hf.engine.methods import rank
from lensllm_hf.engine.ranking import CandidateFit, Ranking

ALICE, BOB = "hf_alice_secret_token", "hf_bob_secret_token"
SIZES = [0, 200, 400, 800, 1600, 3200]
LOSSES = [4.2, 3.4, 3.3, 3.2, 3.05, 2.9]
TARGET = 1_638_400
BODY = "# My model\n\nHand-written text that must survive.\n"
OTHER_META = {"license": "mit", "tags": ["text-generation", "custom"], "base_model": "openai-community/gpt2"}


# -- fixtures ----------------------------------------------------------------------------
def _card_text(metadata: dict, body: str = BODY) -> str:
    """A README.md built by huggingface_hub from metadata (no hand-written YAML)."""
    return ModelCard.from_template(ModelCardData(**metadata), template_str="---\n{{ card_data }}\n---\n" + body).content


def _ranking(*models: str, law_cls=RectifiedLaw, losses=LOSSES, level=0.9) -> Ranking:
    """A ranking whose rows carry the Fit of ``law_cls`` fitted to shifted copies of ``losses``."""
    rows = []
    for i, model in enumerate(models):
        fit = law_cls().fit(SIZES, [x + 0.1 * i for x in losses]).to_fit()
        rows.append(CandidateFit(model=model, fit=fit, score=float(fit.predict([TARGET])[0])))
    return Ranking(target=TARGET, method=law_cls.name, candidates=rows, level=level)


def _default_ranking(curves_dir, level=0.9) -> Ranking:
    """The default method on the first rows of the shared FLAN table, up to 3,200 examples."""
    import pandas as pd

    frame = pd.read_csv(curves_dir / "flan.csv").head(4)
    sizes = [0, 200, 400, 800, 1600, 3200]
    table = CurveTable(models=frame.iloc[:, 0].tolist(), sizes=np.array(sizes, dtype=float),
                       losses=frame[[str(s) for s in sizes]].to_numpy(dtype=float))
    return rank(table, TARGET, "default", level=level)


def _fit(model="gpt2", dataset="imdb", losses=LOSSES, **info) -> CardFit:
    return fits_from_ranking(_ranking(model, losses=losses), model, dataset=dataset, **info)[0]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The local fake Hub, with huggingface_hub pointed at it as its own tests do (patched constants).

    The client's retries on 5xx and connection errors still happen; only their back-off waits
    (1 + 2 + 4 + 8 + 8 s) are skipped, and counted in ``server.retry_waits``.
    """
    with FakeHub(tokens={ALICE: "alice", BOB: "bob"}, orgs={"alice": ["lensllm-org"]}) as server:
        _point_client_at(monkeypatch, server.url, tmp_path)
        monkeypatch.setenv("HF_TOKEN", ALICE)
        server.retry_waits = []
        monkeypatch.setattr(huggingface_hub.utils._http, "time", SimpleNamespace(sleep=server.retry_waits.append))
        yield server


def _point_client_at(monkeypatch, url: str, tmp_path: Path) -> None:
    """HF_ENDPOINT is read when huggingface_hub is imported: patch what was derived from it, and the caches."""
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    if "transformers.utils.hub" in sys.modules:  # the Trainer's shared HfApi keeps the endpoint it was made with
        monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)


def _pushed_readme(hub: FakeHub, repo_id: str, pr: bool = False) -> str:
    """The README.md that the last commit to ``repo_id`` carried, decoded from the recorded NDJSON body."""
    commits = [r for r in hub.calls("POST", f"/api/models/{repo_id}/commit/") if bool(r.query.get("create_pr")) == pr]
    assert commits, f"no {'pull request' if pr else 'commit'} reached the fake Hub"
    import base64

    for line in commits[-1].body.decode().splitlines():
        item = json.loads(line)
        if item["key"] == "file" and item["value"]["path"] == "README.md":
            return base64.b64decode(item["value"]["content"]).decode()
    raise AssertionError("the commit had no README.md")


def _metadata(text: str) -> dict:
    return ModelCard(text).data.to_dict()


# -- the metadata and its conversions ------------------------------------------------------
@pytest.mark.parametrize("law_name", sorted(LAWS))
def test_fit_survives_the_card_yaml_and_predicts_the_same(law_name):
    """A CardFit of every law through the card's YAML (ModelCardData -> text -> ModelCard) predicts as before."""
    ranking = _ranking("gpt2", law_cls=LAWS[law_name])
    (fit,) = fits_from_ranking(ranking, "gpt2", dataset="imdb", split="test", config="plain_text", adapter="lora r=8")
    text = _card_text({"lensllm": [fit.to_dict()]})
    back = CardFit.from_dict(ModelCard(text).data.get("lensllm")[0])
    sizes = [1, 500, 3200, TARGET, 10 * TARGET]
    np.testing.assert_allclose(back.predict(sizes), fit.predict(sizes), rtol=1e-12)
    np.testing.assert_allclose(back.predict_interval(sizes), fit.predict_interval(sizes), rtol=1e-9)
    original = ranking.candidates[0]  # predicted by the fit as the ranking made it, before any serialisation
    assert back.fit == original.fit
    assert (back.predicted_loss, list(back.interval)) == (original.predicted_loss, original.interval)  # exactly
    assert back.key == ("imdb", "plain_text", "test", "eval_loss", "lora r=8")
    assert back.to_dict() == fit.to_dict()
    assert back.to_dict()["fit"] == original.fit.to_dict() and back.to_dict()["date"] == fit.date


def test_fits_from_ranking_keeps_the_ranking_prediction():
    """The conversion keeps law, points, target, prediction and interval of the ranking row."""
    ranking = _ranking("gpt2", "opt")
    (fit,) = fits_from_ranking(ranking.to_dict(), "opt", dataset="imdb", split="test")
    row = ranking.candidates[[c.model for c in ranking.candidates].index("opt")]
    assert (fit.model, fit.target_size, fit.level, fit.predicted_loss, list(fit.interval)) == (
        "opt", TARGET, ranking.level, row.predicted_loss, row.interval)
    assert fit.fit == row.fit and fit.law == row.law
    assert fit.library_version == "0.1.0" and len(fit.date) == 10


@pytest.mark.parametrize("change, message", [
    (lambda r: r, "'bloom' is not in this ranking (it has: 'gpt2')"),
    (lambda r: Ranking(r.target, r.method, [CandidateFit.failed("bloom", "CUDA out of memory")]), "its fit failed"),
    (lambda r: Ranking(r.target, "zeroshot", [CandidateFit("bloom", score=4.0)]), "no fitted law"),
])
def test_fits_from_ranking_refuses_what_it_cannot_write(change, message):
    """A model missing from the ranking, a failed fit or a baseline without a law: one clear line."""
    with pytest.raises(CardError) as error:
        fits_from_ranking(change(_ranking("gpt2")), "bloom", dataset="imdb")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_find_fit_matches_exactly_and_a_published_fit_ranks_like_a_trained_one():
    """find_fit picks by (dataset, config, split, metric, adapter); to_candidate_fit predicts at any target."""
    fits = [_fit(split="test"), _fit(split="test", adapter="lora r=8"), _fit(dataset="gigaword", split="test")]
    assert find_fit(fits, dataset="imdb", split="test") is fits[0]
    assert find_fit(fits, dataset="imdb", split="test", adapter="lora r=8") is fits[1]
    assert find_fit(fits, dataset="imdb", split="validation") is None
    assert find_fit(fits, dataset="imdb", split="test", model="opt") is None
    row = fits[0].to_candidate_fit(target_size=2 * TARGET)
    assert row.prediction is None  # a row has no target or level of its own: its ranking's
    (row,) = Ranking(2 * TARGET, "power", [row], level=0.5).candidates
    assert row.score == row.predicted_loss == float(fits[0].predict([2 * TARGET])[0])
    assert row.interval[0] < row.score < row.interval[1] and row.status == "complete" and row.fit is fits[0].fit
    low, high = fits[0].predict_interval([2 * TARGET], 0.5)  # at its ranking's level
    assert row.interval == [float(low[0]), float(high[0])]
    (own,) = Ranking(fits[0].target_size, "power", [fits[0].to_candidate_fit()], fits[0].level).candidates
    assert (own.predicted_loss, tuple(own.interval)) == (fits[0].predicted_loss, fits[0].interval)


def test_a_published_fit_ranks_exactly_as_the_ranking_that_made_it(tmp_path, hub, curves_dir):
    """The default method on FLAN -> card (folder and Hub) -> published rows: predictions and intervals identical."""
    ranking = _default_ranking(curves_dir, level=0.8)
    assert all(c.fit is not None and c.fit.law == "local-loglog" for c in ranking.ranked)
    folders = {}
    for i, c in enumerate(ranking.ranked):
        folders[c.model] = tmp_path / f"model-{i}"
        folders[c.model].mkdir()
        write_card(folders[c.model], fits_from_ranking(ranking, c.model, dataset="flan", split="test"))
    hub.add_repo("alice/first")
    first = ranking.ranked[0]
    push_fits("alice/first", load_fits(folders[first.model]))

    rows = [published_candidate(str(folders[c.model]), name=c.model, dataset="flan", config=None, split="test",
                                metric="eval_loss", adapter=None, target=ranking.target)
            for c in ranking.ranked]
    rows.append(published_candidate("alice/first", name="from the hub", dataset="flan", config=None, split="test",
                                    metric="eval_loss", adapter=None, target=ranking.target))
    again = Ranking(ranking.target, ranking.method, rows, level=ranking.level)
    by_name = {c.model: c for c in again.ranked}
    for c in ranking.ranked:
        row = by_name[c.model]
        assert row.fit == c.fit
        assert (row.predicted_loss, row.interval) == (c.predicted_loss, c.interval)  # exactly, not approximately
        assert row.flops == 0.0 and row.source.startswith("hub card ")
    hub_row = by_name["from the hub"]
    assert (hub_row.predicted_loss, hub_row.interval) == (first.predicted_loss, first.interval)
    assert hub_row.source == "hub card alice/first"


#: Failed requests that fail the first metadata question whole (checked: 1 is absorbed by the client, 2 is not).
FIRST_QUESTION_FAILS = 2


def test_a_card_never_read_is_read_when_the_hub_answers_on_a_retry(hub):
    """No cached copy, and a Hub that fails the first question (503) but answers the bounded retry: the
    retry's answer is used, not the first error."""
    ask = {"name": "gpt2", "dataset": "imdb", "config": None, "split": "test", "metric": "eval_loss",
           "adapter": None, "target": TARGET}
    hub.add_repo("alice/flaky", {"README.md": _card_text({"lensllm": [_fit(split="test").to_dict()]}).encode()})
    hub.fail_with, hub.fail_times = 503, FIRST_QUESTION_FAILS
    assert published_candidate("alice/flaky", **ask).model == "gpt2"
    assert hub.fail_times == 0


def test_published_candidate_is_none_when_nothing_matches_or_the_hub_cannot_answer(tmp_path, hub, monkeypatch):
    """Another dataset or adapter, no card, not a repo ID, Hub down, offline: None (train it); malformed: a warning."""
    write_card(tmp_path, _fit(split="test"))
    ask = {"name": "gpt2", "dataset": "imdb", "config": None, "split": "test", "metric": "eval_loss",
           "adapter": None, "target": TARGET}
    assert published_candidate(str(tmp_path), **ask) is not None
    assert published_candidate(str(tmp_path), **{**ask, "dataset": "gigaword"}) is None
    assert published_candidate(str(tmp_path), **{**ask, "adapter": "lora r=8"}) is None
    assert published_candidate("my local model", **ask) is None  # neither a folder nor a repo ID
    assert published_candidate("alice/missing", **ask) is None
    hub.add_repo("alice/gpt2", {"README.md": _card_text({"lensllm": [_fit(split="test").to_dict()]}).encode()})
    assert published_candidate("alice/gpt2", **ask).model == "gpt2"
    hub.add_repo("alice/never-read", {"README.md": _card_text({"lensllm": [_fit(split="test").to_dict()]}).encode()})
    hub.fail_with = 503
    with pytest.warns(UserWarning, match="did not answer .status 503.; using the copy of its card cached"):
        assert published_candidate("alice/gpt2", **ask) is not None  # read before: huggingface_hub's cached copy
    assert published_candidate("alice/never-read", **ask) is None
    hub.fail_with = None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = len(hub.requests)
    assert published_candidate("alice/other", **ask) is None and len(hub.requests) == requests
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "README.md").write_text(_card_text({"lensllm": [{"dataset": "imdb"}]}), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"lensllm\[0\]\.fit.*gpt2 is trained instead"):
        assert published_candidate(str(broken), **ask) is None


# -- write_card ----------------------------------------------------------------------------
def test_write_card_creates_a_card_that_huggingface_hub_loads_and_validates(tmp_path, hub):
    """A new card loads with ModelCard.load, passes the model-index round trip and the (local) validate-yaml."""
    fit = _fit(split="test")
    path = write_card(tmp_path, fit)
    assert path == tmp_path / "README.md"
    card = ModelCard.load(path)  # parses and validates model-index through ModelCardData
    metadata = card.data.to_dict()
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "gpt2" and len(results) == len(SIZES)
    assert all(r.verified is False and r.task_type == "text-generation" and r.dataset_type == "imdb" for r in results)
    assert [r.metric_value for r in results] == LOSSES
    assert ModelCardData(**yaml.safe_load(yaml.safe_dump(metadata))).eval_results == results
    card.validate()  # POST /api/validate-yaml on the local server, which parses it with huggingface_hub
    assert hub.calls("POST", "/api/validate-yaml")
    assert load_fits(tmp_path)[0].to_dict() == fit.to_dict()


def test_write_card_keeps_body_and_metadata_and_replaces_the_same_fit(tmp_path):
    """Other metadata and the body survive; same key replaces, other datasets and adapters sit beside it."""
    (tmp_path / "README.md").write_text(_card_text(OTHER_META), encoding="utf-8")
    write_card(tmp_path, [_fit(split="test"), _fit(dataset="gigaword", split="test")])
    write_card(tmp_path, _fit(split="test", adapter="lora r=8"))
    newer = _fit(split="test", losses=[x - 0.5 for x in LOSSES])
    write_card(tmp_path, newer)

    card = ModelCard.load(tmp_path / "README.md")
    assert card.text == ModelCard(_card_text(OTHER_META)).text
    assert {k: card.data.get(k) for k in OTHER_META} == OTHER_META
    keys = [(f.dataset, f.adapter) for f in load_fits(tmp_path)]
    assert keys == [("imdb", None), ("gigaword", None), ("imdb", "lora r=8")]
    assert load_fits(tmp_path)[0].to_dict() == newer.to_dict()
    imdb = [r for r in card.data.eval_results if r.dataset_type == "imdb" and "adapter" not in r.metric_name]
    assert sorted(r.metric_value for r in imdb) == sorted(x - 0.5 for x in LOSSES)  # replaced, not added


def test_rewriting_a_fit_on_fewer_sizes_drops_its_stale_eval_results(tmp_path):
    """The model-index holds the points of the current fit only, for that key."""
    write_card(tmp_path, _fit(split="test"))
    fit = RectifiedLaw().fit(SIZES[:4], LOSSES[:4]).to_fit()
    write_card(tmp_path, CardFit(fit, dataset="imdb", dataset_split="test", model="gpt2", target_size=TARGET))
    names = [r.metric_name for r in ModelCard.load(tmp_path / "README.md").data.eval_results]
    assert names == ["eval_loss zero-shot"] + [f"eval_loss after fine-tuning on {n} examples" for n in SIZES[1:4]]


@pytest.mark.parametrize("block, field", [
    ("not a list", "'lensllm' must be a list"),
    ([{"dataset": "imdb", "metric": "eval_loss"}], "lensllm[0].fit: expected an object"),
    ("old layout", "lensllm[0].fit: missing; this entry was written by an earlier lensllm_hf"),
    ("unknown law", "lensllm[0].fit.law: unknown law 'chinchilla'"),
    ("losses-mismatch", "lensllm[0].fit: sizes, losses and used must have the same length (6, 5, 6)"),
    ("params-missing", "lensllm[0].fit: a rectified fit needs the parameters B, F, beta, E; missing beta"),
    ("params-text", "lensllm[0].fit.params.E: expected a finite number"),
    ("no-dataset", "lensllm[0].dataset: expected a value"),
    ("bad level", "lensllm[0].level must be a number between 0 and 1"),
    ("bad target", "lensllm[0].target_size: expected a finite number > 0, got -5"),
])
def test_a_malformed_block_names_the_field_and_leaves_the_card_untouched(tmp_path, block, field):
    """A malformed lensllm block is reported with its field, and the README stays byte for byte."""
    good = _fit().to_dict()
    fit = good["fit"]
    broken = {
        "old layout": [{k: v for k, v in good.items() if k != "fit"} | {"law": "rectified", "params": fit["params"],
                                                                          "sizes": SIZES, "losses": LOSSES}],
        "unknown law": [{**good, "fit": {**fit, "law": "chinchilla"}}],
        "losses-mismatch": [{**good, "fit": {**fit, "losses": LOSSES[:5]}}],
        "params-missing": [{**good, "fit": {**fit, "params": {"B": 1.0, "F": 1.0, "E": 1.0}}}],
        "params-text": [{**good, "fit": {**fit, "params": {**fit["params"], "E": "low"}}}],
        "no-dataset": [{k: v for k, v in good.items() if k != "dataset"}],
        "bad level": [{**good, "level": 1.5}],
        "bad target": [{**good, "target_size": -5}],
    }.get(block, block) if isinstance(block, str) else block
    readme = tmp_path / "README.md"
    readme.write_text(_card_text({**OTHER_META, "lensllm": broken}), encoding="utf-8")
    before = readme.read_bytes()
    with pytest.raises(CardMetadataError) as error:
        write_card(tmp_path, _fit(dataset="gigaword"))
    assert field in str(error.value) and "\n" not in str(error.value)
    assert readme.read_bytes() == before
    with pytest.raises(CardMetadataError) as error:
        load_fits(tmp_path)
    assert field in str(error.value)


def test_a_card_with_a_broken_model_index_is_reported_not_rewritten(tmp_path):
    """huggingface_hub's own model-index validation failing: a CardMetadataError, the file unchanged."""
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\nmodel-index:\n- name: x\n  results:\n  - task: {}\n---\nbody\n",
                      encoding="utf-8")
    before = readme.read_bytes()
    with pytest.raises(CardMetadataError, match="malformed"):
        write_card(tmp_path, _fit())
    assert readme.read_bytes() == before
    with pytest.raises(CardError, match="no such folder"):
        write_card(tmp_path / "missing", _fit())


# -- push_fits and load_fits against the local fake Hub ------------------------------------
def test_push_to_own_repo_commits_exactly_the_merged_yaml(hub):
    """Local server: a push to your repo is one commit whose README keeps the card and adds the fit."""
    hub.add_repo("alice/gpt2-imdb", {"README.md": _card_text(OTHER_META).encode(), "config.json": b"{}"})
    fit = _fit(split="test")
    commit = push_fits("alice/gpt2-imdb", [fit])

    assert commit.pr_url is None and commit.commit_url.startswith(hub.url + "/alice/gpt2-imdb/commit/")
    sent = _pushed_readme(hub, "alice/gpt2-imdb")
    assert sent == hub.readme("alice/gpt2-imdb")
    metadata = _metadata(sent)
    assert metadata["lensllm"] == [fit.to_dict()]
    assert {k: metadata[k] for k in OTHER_META} == OTHER_META
    assert ModelCard(sent).text == ModelCard(_card_text(OTHER_META)).text
    _, results = model_index_to_eval_results(metadata["model-index"])
    assert [r.metric_value for r in results] == LOSSES and not any(r.verified for r in results)
    assert {r.authorization for r in hub.calls("POST", "/api/models/")} == {f"Bearer {ALICE}"}
    assert hub.repos["alice/gpt2-imdb"].commits == ["Add LensLLM scaling-law fits (imdb)"]


def test_write_push_load_round_trip_predicts_the_same(tmp_path, hub):
    """Local server: write -> push -> load gives fits whose laws predict what the originals did."""
    hub.add_repo("alice/gpt2")
    fits = [_fit(split="test"), _fit(dataset="gigaword", split="test", adapter="lora r=8")]
    write_card(tmp_path, fits)
    push_fits("alice/gpt2", load_fits(tmp_path))  # what the folder's card says, published
    loaded = load_fits("alice/gpt2")
    sizes = [0, 1000, TARGET, 100 * TARGET]
    for original, back in zip(fits, loaded, strict=True):
        assert back.fit == original.fit
        np.testing.assert_array_equal(back.predict(sizes), original.predict(sizes))
        np.testing.assert_array_equal(back.predict_interval(sizes), original.predict_interval(sizes))
        assert back.key == original.key and back.source == "alice/gpt2"
    assert find_fit(loaded, dataset="gigaword", split="test", adapter="lora r=8") is loaded[1]


def test_pushing_the_same_key_again_replaces_its_entry_on_the_hub(hub):
    """Local server: a second push of the same (dataset, ..., adapter) replaces; another dataset is added."""
    hub.add_repo("alice/gpt2", {"README.md": _card_text(OTHER_META).encode()})
    push_fits("alice/gpt2", _fit(split="test"))
    push_fits("alice/gpt2", _fit(dataset="gigaword"))
    newer = _fit(split="test", losses=[x - 0.5 for x in LOSSES])
    push_fits("alice/gpt2", newer)
    entries = _metadata(hub.readme("alice/gpt2"))["lensllm"]
    assert [e["dataset"] for e in entries] == ["imdb", "gigaword"]
    assert entries[0] == newer.to_dict()
    assert len(hub.repos["alice/gpt2"].commits) == 3


def test_push_to_a_repo_you_do_not_own_opens_a_pull_request(hub):
    """Local server: no write access -> create_pr=1 on preupload and commit, main untouched, the PR has the fit."""
    hub.add_repo("bob/opt", {"README.md": _card_text(OTHER_META).encode()})
    before = hub.readme("bob/opt")
    commit = push_fits("bob/opt", _fit())
    assert commit.pr_url == f"{hub.url}/bob/opt/discussions/1"
    assert all(r.query.get("create_pr") == ["1"] for r in hub.calls("POST", "/api/models/bob/opt/"))
    assert hub.readme("bob/opt") == before and hub.repos["bob/opt"].commits == []
    (pr,) = hub.pull_requests
    assert _metadata(pr.files["README.md"].decode())["lensllm"] == [_fit().to_dict()]
    assert hub.calls("GET", "/api/whoami-v2")  # ownership was asked, not guessed


def test_create_pr_is_honoured_on_your_own_and_your_orgs_repos(hub):
    """Local server: create_pr=True opens a PR even where you may commit; an org you write to gets a commit."""
    hub.add_repo("alice/gpt2")
    hub.add_repo("lensllm-org/gpt2")
    assert push_fits("alice/gpt2", _fit(), create_pr=True).pr_url is not None
    assert "lensllm" in _metadata(_pushed_readme(hub, "alice/gpt2", pr=True))
    assert push_fits("lensllm-org/gpt2", _fit()).pr_url is None
    assert "lensllm" in _metadata(hub.readme("lensllm-org/gpt2"))


def test_push_to_a_repo_without_readme_creates_the_card(hub):
    """Local server: metadata_update creates README.md from huggingface_hub's template, with the fit."""
    hub.add_repo("alice/bare", {"config.json": b"{}"})
    push_fits("alice/bare", _fit())
    assert _metadata(hub.readme("alice/bare"))["lensllm"] == [_fit().to_dict()]
    assert load_fits("alice/bare")[0].key == _fit().key


def test_a_card_changed_during_the_push_is_not_overwritten(hub):
    """Local server: someone commits between our read and our write -> 412, their change stays, we say retry."""
    hub.add_repo("alice/gpt2", {"README.md": _card_text(OTHER_META).encode()})
    theirs = _card_text({**OTHER_META, "license": "apache-2.0"}).encode()

    def someone_commits_once(request):  # runs when the client fetches the card
        if hub.repos["alice/gpt2"].files["README.md"] != theirs:
            hub.commit_file("alice/gpt2", "README.md", theirs)

    hub.hooks["/resolve/"] = someone_commits_once
    with pytest.raises(HubError, match="the card changed on the Hub while pushing [(]412[)]; run it again"):
        push_fits("alice/gpt2", _fit())
    assert hub.readme("alice/gpt2") == theirs.decode()
    hub.hooks.clear()
    push_fits("alice/gpt2", _fit())  # the retry merges with their card
    assert _metadata(hub.readme("alice/gpt2"))["license"] == "apache-2.0"


def test_a_malformed_block_on_the_hub_is_reported_and_nothing_is_pushed(hub):
    """Local server: the card on the Hub has a bad lensllm entry -> the field is named, no commit is sent."""
    good = _fit().to_dict()
    broken = {**good, "fit": {**good["fit"], "sizes": "many"}}
    hub.add_repo("alice/gpt2", {"README.md": _card_text({**OTHER_META, "lensllm": [broken]}).encode()})
    with pytest.raises(CardMetadataError, match=r"alice/gpt2: lensllm\[0\]\.fit\.sizes"):
        push_fits("alice/gpt2", _fit(dataset="gigaword"))
    assert not hub.calls("POST", "/commit/")
    with pytest.raises(CardMetadataError, match=r"lensllm\[0\]\.fit\.sizes"):
        load_fits("alice/gpt2")


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("case, error_type, status, words", [
    ("no token", HubError, 401, "no Hugging Face token"),
    ("bad token", HubError, 401, "401"),
    ("not allowed", HubError, 403, "403"),
    ("no repo", HubError, 404, "no such model repo"),
    ("hub down", NetworkError, 503, "answered 503"),
    ("commit fails", NetworkError, 500, "answered 500"),
    ("card rejected", HubError, 400, "the Hub rejected the card (400 Bad Request: The Hub is having a bad day)"),
    ("network down", NetworkError, None, "cannot reach the Hub"),
])
def test_push_errors_are_one_line_and_change_nothing(hub, tmp_path, monkeypatch, case, error_type, status, words):
    """Local server: each failure is one LensLLMError line naming cause and fix; no token in it; no commit."""
    hub.add_repo("bob/opt", {"README.md": _card_text(OTHER_META).encode()})
    hub.add_repo("alice/gpt2", {"README.md": _card_text(OTHER_META).encode()})
    write_card(tmp_path, _fit())
    local_before = (tmp_path / "README.md").read_bytes()
    repo, kwargs = "alice/gpt2", {}
    if case == "no token":
        monkeypatch.delenv("HF_TOKEN")
    elif case == "bad token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong_" + ALICE)
    elif case == "not allowed":
        repo, kwargs = "bob/opt", {"create_pr": False}
    elif case == "no repo":
        repo = "alice/missing"
    elif case == "hub down":
        hub.fail_with = 503
    elif case == "commit fails":
        hub.fail_with, hub.fail_on = 500, "/commit/"
    elif case == "card rejected":
        hub.fail_with, hub.fail_on = 400, "/api/validate-yaml"
    elif case == "network down":
        _point_client_at(monkeypatch, _closed_port_url(), tmp_path)

    with pytest.raises(error_type) as error:
        push_fits(repo, load_fits(tmp_path), **kwargs)
    message = str(error.value)
    assert words in message and "\n" not in message and "nothing was changed" in message
    assert (error.value.status, error.value.source) == (status, repo)  # what went wrong, for a program
    assert ALICE not in message
    assert hub.repos["bob/opt"].commits == [] and hub.repos["alice/gpt2"].commits == [] and not hub.pull_requests
    assert (tmp_path / "README.md").read_bytes() == local_before


@pytest.mark.parametrize("case, error_type, status, words", [
    ("bad token", HubError, 401, "401"),
    ("no repo", HubError, 404, "no such model repo"),
    ("hub down", NetworkError, 502, "answered 502"),
    ("network down", HubUnavailableError, None, "cannot reach the Hub"),  # the earlier name of NetworkError
])
def test_load_errors_are_one_line(hub, tmp_path, monkeypatch, case, error_type, status, words):
    """Local server: reading a card fails with one line naming the cause."""
    hub.add_repo("alice/gpt2", {"README.md": _card_text({"lensllm": [_fit().to_dict()]}).encode()})
    repo = "alice/gpt2"
    if case == "bad token":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    elif case == "no repo":
        repo = "alice/missing"
    elif case == "hub down":
        hub.fail_with = 502
    elif case == "network down":
        _point_client_at(monkeypatch, _closed_port_url(), tmp_path)
    with pytest.raises(error_type, match=words) as error:
        load_fits(repo)
    assert "\n" not in str(error.value) and (error.value.status, error.value.source) == (status, repo)
    assert len(hub.retry_waits) == (5 if case in ("hub down", "network down") else 0)  # the client retried first


def test_load_fits_of_folders_and_cards_without_fits(tmp_path, hub):
    """A folder without README.md, a card without a lensllm block, a repo without README: no fits, no error."""
    assert load_fits(tmp_path) == []
    (tmp_path / "README.md").write_text(_card_text(OTHER_META), encoding="utf-8")
    assert load_fits(tmp_path / "README.md") == []
    hub.add_repo("alice/bare")
    assert load_fits("alice/bare") == []
    with pytest.raises(CardError, match="not a Hub repo ID"):
        load_fits(str(tmp_path / "nope" / "deeper" / "README.md"))


# -- Hub paths that leak nothing and wait for nothing ----------------------------------------
SECRET_PASSWORD = "pa55-w0rd-never-shown"


def _with_credentials(url: str, user: str = "carol") -> str:
    """``url`` with a user and password in it, as some proxies want ``HF_ENDPOINT``."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{SECRET_PASSWORD}@{rest}"


@pytest.fixture
def client_logs():
    """Every line huggingface_hub logs (its retries name the URL), as its own stderr handler would print it."""
    import logging

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    logger = logging.getLogger("huggingface_hub")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


@pytest.mark.parametrize("case", ["hub down", "network down", "not a hub", "echoing server", "plain token"])
@pytest.mark.parametrize("action", ["push", "load", "cli show"])
def test_no_message_ever_shows_a_token_or_endpoint_credentials(hub, tmp_path, monkeypatch, capsys, client_logs, case,
                                                               action):
    """Local server: tokens (hf_... or not) and HF_ENDPOINT passwords are redacted on every failing path,
    in our one-line errors and in the lines the HTTP client logs while it retries."""
    hub.add_repo("alice/gpt2", {"README.md": _card_text({"lensllm": [_fit().to_dict()]}).encode()})
    token = ALICE
    if case == "hub down":
        hub.fail_with = 503
        _point_client_at(monkeypatch, _with_credentials(hub.url), tmp_path)
    elif case == "network down":
        _point_client_at(monkeypatch, _with_credentials(_closed_port_url(), user=ALICE), tmp_path)
    elif case == "not a hub":
        hub.answer_all_with = (200, "text/html", b"<html>Sign in to the hotel wifi</html>")
        _point_client_at(monkeypatch, _with_credentials(hub.url), tmp_path)
    elif case == "echoing server":  # a proxy that puts what it received into its error message
        hub.fail_with = 400
        hub.fail_message = f"bad request: Authorization: Bearer {ALICE} from carol:{SECRET_PASSWORD}"
        _point_client_at(monkeypatch, _with_credentials(hub.url), tmp_path)
    elif case == "plain token":  # a token that does not look like one: redacted because it is the one in use
        token = "opaque-enterprise-token-42"
        hub.tokens[token] = "alice"
        hub.fail_with, hub.fail_message = 400, f"token {token} is not allowed to do this"
    monkeypatch.setenv("HF_TOKEN", token)

    if action == "cli show":
        assert main(["card", "show", "alice/gpt2"]) == 2
        captured = capsys.readouterr()
        message = captured.err
        assert message.count("\n") == 1 and not captured.out
    else:
        with pytest.raises(HubError) as error:
            push_fits("alice/gpt2", _fit()) if action == "push" else load_fits("alice/gpt2")
        message = str(error.value)
        assert "\n" not in message
    assert token not in message and SECRET_PASSWORD not in message
    assert "alice/gpt2" in message  # still says what failed
    logged = "\n".join(client_logs)
    assert token not in logged and SECRET_PASSWORD not in logged
    if case in ("hub down", "network down") and action != "push":  # the client retried, and said so with the URL
        assert "***@127.0.0.1" in logged


@pytest.mark.parametrize("status, content_type, body", [
    (200, "text/html", b"<!doctype html><html><body>Please log in to the guest network</body></html>"),
    (200, "application/json", b"{this is not json"),
    (200, "application/json", b'["a", "list", "where", "an", "object", "was", "due"]'),
    (200, "text/plain", b"hello"),
    (404, "text/html", b"<html><body>Not Found</body></html>"),
    (403, "text/html", b"<html><body>Blocked by your proxy</body></html>"),
])
@pytest.mark.parametrize("action", ["push", "load"])
def test_a_server_that_is_not_a_hub_is_one_line(hub, action, status, content_type, body):
    """Local server answering HTML, garbage or the wrong JSON everywhere: one HubError line naming HF_ENDPOINT."""
    hub.add_repo("alice/gpt2")
    hub.answer_all_with = (status, content_type, body)
    with pytest.raises(HubError) as error:
        push_fits("alice/gpt2", _fit()) if action == "push" else load_fits("alice/gpt2")
    message = str(error.value)
    assert "did not answer like a Hugging Face Hub" in message and "HF_ENDPOINT" in message
    assert "\n" not in message and "<html" not in message and "Traceback" not in message
    assert hub.retry_waits == [] and hub.repos["alice/gpt2"].commits == []
    if action == "push":
        assert message.endswith("nothing was changed on the Hub or here")


@pytest.fixture
def silent(hub, tmp_path, monkeypatch):
    """A Hub that accepts every connection and never answers, with the client's timeouts cut to 0.3 s
    (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT) and its retry waits skipped, as in ``hub``."""
    with SilentServer() as server:
        _point_client_at(monkeypatch, server.url, tmp_path)
        monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.3)
        monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.3)
        yield server


def test_a_hub_that_never_answers_fails_a_push_in_one_line_and_nothing_waits_forever(silent, tmp_path, capsys):
    """Local server that accepts and never answers: 'card push' and 'card show' give up after the timeout
    (one try for the push's calls, huggingface_hub's 5 bounded retries for the card) with one line naming
    the endpoint and the fix."""
    fit_json = tmp_path / "fit.json"
    _ranking("alice/gpt2").to_json(fit_json)
    assert main(["card", "push", "alice/gpt2", "--from", str(fit_json), "--dataset", "imdb"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the Hub at {silent.url} did not answer in time" in err, err
    assert "HF_HUB_DOWNLOAD_TIMEOUT" in err and "nothing was changed on the Hub or here" in err
    assert main(["card", "show", "alice/gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not answer in time" in err, err
    assert silent.connections >= 2


def test_a_hub_that_never_answers_in_a_fresh_process_honours_hf_hub_download_timeout(tmp_path):
    """Local server that never answers: 'lensllm card push' in a subprocess gives up after the
    HF_HUB_DOWNLOAD_TIMEOUT of its environment (1 s here), exit 2, one line."""
    fit_json = tmp_path / "fit.json"
    _ranking("alice/gpt2").to_json(fit_json)
    with SilentServer() as silent:
        url = silent.url
        env = {**os.environ, "HF_ENDPOINT": url, "HF_TOKEN": ALICE, "HF_HOME": str(tmp_path / "home"),
               "HF_HUB_DOWNLOAD_TIMEOUT": "1", "HF_HUB_ETAG_TIMEOUT": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        done = subprocess.run([sys.executable, "-c", "import sys; from lensllm_hf.cli import main; sys.exit(main())",
                               "card", "push", "alice/gpt2", "--from", str(fit_json), "--dataset", "imdb"],
                              env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"the Hub at {url} did not answer in time (ReadTimeout after 1 s)" in done.stderr


@pytest.mark.parametrize("how", ["503", "500", "401", "429", "no answer"])
def test_a_cached_card_shown_because_the_hub_failed_says_so(hub, tmp_path, monkeypatch, capsys, how):
    """Local server: after one good read, 'card show' while the Hub answers 5xx, 401, 429 or nothing prints
    the cached card, exit 0, and says on stderr, in one line, that it is the cached copy."""
    hub.add_repo("alice/gpt2", {"README.md": _card_text({"lensllm": [_fit().to_dict()]}).encode()})
    assert main(["card", "show", "alice/gpt2"]) == 0
    fresh = capsys.readouterr()
    assert "1 fit" in fresh.out and not fresh.err
    if how == "401":
        monkeypatch.setenv("HF_TOKEN", "hf_wrong_token_1234")
    elif how == "no answer":
        server = SilentServer().start()
        _point_client_at(monkeypatch, server.url, tmp_path)
        monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.3)
    else:
        hub.fail_with = int(how)
    try:
        assert main(["card", "show", "alice/gpt2"]) == 0
    finally:
        if how == "no answer":
            server.stop()
    shown = capsys.readouterr()
    assert shown.out == fresh.out
    said = "no answer within 0.3 s" if how == "no answer" else f"status {how}"
    assert shown.err.count("\n") == 1 and shown.err.startswith("lensllm card: warning: alice/gpt2: the Hub at ")
    assert f"did not answer ({said}); using the copy of its card cached on this machine" in shown.err


def test_cli_card_show_of_a_server_that_is_not_a_hub(hub, capsys):
    """Local server: 'lensllm card show' against an HTML page: exit 2, one line on stderr."""
    hub.answer_all_with = (200, "text/html", b"<html>captive portal</html>")
    assert main(["card", "show", "alice/gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not answer like a Hugging Face Hub" in err


@pytest.mark.parametrize("set_how", ["environment after import", "huggingface_hub constant"])
def test_offline_mode_fails_at_once_and_sends_nothing(hub, tmp_path, monkeypatch, capsys, set_how):
    """HF_HUB_OFFLINE=1: load_fits, push_fits and 'card show' fail at once, no request, no retry wait.

    huggingface_hub reads the variable when it is imported; set later (a notebook, a script),
    it used to be ignored and the client waited through 25 s of retries.
    """
    hub.add_repo("alice/gpt2", {"README.md": _card_text({"lensllm": [_fit().to_dict()]}).encode()})
    if set_how == "environment after import":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE is set and the card is not in the local"):
        load_fits("alice/gpt2")
    with pytest.raises(HubUnavailableError, match="HF_HUB_OFFLINE is set, so nothing is sent.*nothing was changed"):
        push_fits("alice/gpt2", _fit())
    assert main(["card", "show", "alice/gpt2"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert hub.requests == [] and hub.retry_waits == []
    write_card(tmp_path, _fit())  # a local card needs no Hub
    assert load_fits(tmp_path)[0].key == _fit().key


def test_offline_mode_reads_a_card_already_in_the_cache(hub, monkeypatch):
    """Local server: a card read once online is read from huggingface_hub's cache offline, with no request."""
    hub.add_repo("alice/gpt2", {"README.md": _card_text({"lensllm": [_fit().to_dict()]}).encode()})
    online = load_fits("alice/gpt2")
    before = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = load_fits("alice/gpt2")
    assert [f.to_dict() for f in offline] == [f.to_dict() for f in online] and len(hub.requests) == before


def test_write_card_keeps_the_file_mode_and_writes_through_a_symlink(tmp_path):
    """card write: a 0640 README stays 0640; a symlinked README.md stays a link and its target gets the fit."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    readme = model_dir / "README.md"
    readme.write_text(_card_text(OTHER_META), encoding="utf-8")
    readme.chmod(0o640)
    write_card(model_dir, _fit())
    assert readme.stat().st_mode & 0o777 == 0o640 and load_fits(model_dir)[0].key == _fit().key

    shared = tmp_path / "shared-cards"
    shared.mkdir()
    (shared / "gpt2.md").write_text(_card_text(OTHER_META), encoding="utf-8")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "README.md").symlink_to(shared / "gpt2.md")
    fit_json = tmp_path / "fit.json"
    _ranking("gpt2").to_json(fit_json)
    assert main(["card", "write", str(linked), "--from", str(fit_json), "--dataset", "imdb"]) == 0
    assert (linked / "README.md").is_symlink()
    assert load_fits(shared / "gpt2.md")[0].model == "gpt2"
    assert sorted(p.name for p in linked.iterdir()) == ["README.md"]  # no temporary file left behind
    assert sorted(p.name for p in shared.iterdir()) == ["gpt2.md"]


def test_long_and_unusual_candidate_names_get_their_own_card_folders(tmp_path):
    """A 300-character name, 'org/A' beside 'org--A', unicode and control characters: one card each, no crash."""
    from lensllm_hf.selector.result import SelectionResult

    names = ["x" * 300, "org/A", "org--A", "модель/A", "模型/A", "A ", "A", "bad\x1bname",
             "EleutherAI/pythia-70m", "GPT2", "gpt2"]
    result = SelectionResult(fits=_ranking(*names), table=None)
    written = result.write_cards(tmp_path / "cards")
    assert set(written) == set(names)
    # One folder each, on case-insensitive file systems (macOS, Windows) too.
    assert len({str(path.parent).lower() for path in written.values()}) == len(names)
    assert all(len(path.parent.name) <= 100 for path in written.values())
    assert written["EleutherAI/pythia-70m"].parent.name == "EleutherAI--pythia-70m"
    for name, path in written.items():
        (fit,) = load_fits(path)
        assert fit.model == name
    with pytest.raises(CardError, match="not a Hub repo ID") as error:  # too long for a path: not an OSError
        load_fits("x" * 5000)
    assert "\n" not in str(error.value) and len(str(error.value)) <= 1000


# -- the command line --------------------------------------------------------------------
def test_cli_write_show_push(tmp_path, hub, capsys):
    """Local server: lensllm card write / show / push with the JSON of 'lensllm fit --json'."""
    fit_json = tmp_path / "fit.json"
    _ranking("alice/gpt2", "opt").to_json(fit_json)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    assert main(["card", "write", str(model_dir), "--from", str(fit_json), "--model", "opt", "--dataset", "imdb",
                 "--split", "test", "--config", "plain_text"]) == 0
    assert load_fits(model_dir)[0].key == ("imdb", "plain_text", "test", "eval_loss", None)

    assert main(["card", "show", str(model_dir)]) == 0
    shown = capsys.readouterr().out
    assert "1 fit" in shown and "opt on imdb (plain_text, test), eval_loss: rectified law, 6 of 6 points used" in shown

    hub.add_repo("alice/gpt2")
    assert main(["card", "push", "alice/gpt2", "--from", str(fit_json), "--dataset", "imdb", "--pr"]) == 0
    out = capsys.readouterr().out
    assert "opened a pull request" in out and hub.pull_requests[0].repo_id == "alice/gpt2"
    assert _metadata(hub.pull_requests[0].files["README.md"].decode())["lensllm"][0]["model"] == "alice/gpt2"

    assert main(["card", "show", "alice/gpt2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # the PR is not merged: main has no fits yet


def test_cli_predict_reads_a_hub_repo_id_as_card_show_does(hub, capsys, tmp_path):
    """Local server: 'lensllm predict alice/tiny' predicts from the card on the Hub, the fit's own numbers."""
    hub.add_repo("alice/tiny")
    fit = _fit(model="alice/tiny", split="test")
    push_fits("alice/tiny", [fit])
    out = tmp_path / "prediction.json"
    assert main(["predict", "alice/tiny", "--model", "alice/tiny", "--at", "1e6", "--json", str(out)]) == 0
    prediction = json.loads(out.read_text(encoding="utf-8"))
    low, high = fit.predict_interval([1e6])
    assert prediction["predicted_loss"] == fit.predict([1e6])[0]
    assert prediction["interval"] == [low[0], high[0]]
    capsys.readouterr()
    assert main(["predict", "alice/none", "--model", "alice/none", "--at", "1e6"]) == 2  # no such repo: one line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "alice/none" in err and "no such model repo" in err


def test_cli_errors_exit_2_with_one_line(tmp_path, hub, capsys, monkeypatch):
    """Local server: a Hub refusal and a bad --model are one stderr line and exit code 2, token never shown."""
    fit_json = tmp_path / "fit.json"
    _ranking("gpt2", "opt").to_json(fit_json)
    assert main(["card", "push", "alice/gpt2", "--from", str(fit_json), "--dataset", "imdb"]) == 2
    assert "say which with --model" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_" + ALICE)
    assert main(["card", "push", "alice/gpt2", "--from", str(fit_json), "--model", "gpt2", "--dataset", "imdb"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "401" in captured.err and ALICE not in captured.err + captured.out


def test_cli_in_a_fresh_process_honours_hf_endpoint_and_hf_token(tmp_path, hub):
    """Local server: 'lensllm card push' in a subprocess reads HF_ENDPOINT and HF_TOKEN from the environment."""
    fit_json = tmp_path / "fit.json"
    _ranking("alice/gpt2").to_json(fit_json)
    hub.add_repo("alice/gpt2")
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": ALICE, "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    done = subprocess.run([sys.executable, "-c", "import sys; from lensllm_hf.cli import main; sys.exit(main())",
                           "card", "push", "alice/gpt2", "--from", str(fit_json), "--dataset", "imdb"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pushed the imdb fit of alice/gpt2 to alice/gpt2" in done.stdout
    assert ALICE not in done.stdout + done.stderr
    assert _metadata(hub.readme("alice/gpt2"))["lensllm"][0]["dataset"] == "imdb"
    assert hub.calls("POST", "/api/models/alice/gpt2/commit/main")[0].authorization == f"Bearer {ALICE}"


# -- a real Trainer -----------------------------------------------------------------------
def test_trainer_push_carries_the_fit_where_plain_push_to_hub_drops_it(tmp_path, hub, monkeypatch):
    """Local server: a tiny GPT-2 Trainer pushes once; the pushed card keeps the Trainer's card and has the fit."""
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    _point_client_at(monkeypatch, hub.url, tmp_path)  # transformers is imported now: reset its HfApi
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    ids = torch.randint(0, 32, (8, 12)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TrainingArguments(str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, report_to="none",
                             push_to_hub=True, hub_model_id="alice/tiny-gpt2", hub_token=ALICE, use_cpu=True,
                             save_strategy="no", logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    fit = _fit(model="alice/tiny-gpt2", split="test")

    # The trap: a fit written into output_dir does not survive Trainer.push_to_hub (create_model_card rewrites it).
    write_card(args.output_dir, fit)
    trainer.push_to_hub()
    assert "lensllm" not in _metadata(hub.readme("alice/tiny-gpt2"))

    commits_before = len(hub.repos["alice/tiny-gpt2"].commits)
    push_to_hub_with_fits(trainer, fit, commit_message="End of training, with fits")
    pushed = _metadata(hub.readme("alice/tiny-gpt2"))
    assert pushed["lensllm"] == [fit.to_dict()]
    assert "generated_from_trainer" in pushed["tags"]  # the Trainer's card is kept
    assert hub.repos["alice/tiny-gpt2"].commits[commits_before:] == ["End of training, with fits"]  # one commit
    assert "model.safetensors" in hub.repos["alice/tiny-gpt2"].files
    assert load_fits(args.output_dir)[0].to_dict() == fit.to_dict()  # the local card has it too
    assert "create_model_card" not in vars(trainer)  # the instance is as it was
