"""The interval level a user asks for reaches every output, under every strategy.

``lensllm select CONFIG --level L`` on tiny local models: the printed table, ``selection.json``,
``selection.md``, the model cards and ``lensllm predict`` (on the JSON and on a card) carry L and
intervals of level L at the target; the same selection from Python draws its band at L. The
selections share one store, so only the first trains.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from lensllm_hf.cli import main  # noqa: E402
from lensllm_hf.engine.ranking import Ranking  # noqa: E402
from lensllm_hf.hub_cards import load_fits  # noqa: E402
from lensllm_hf.selector.config import SelectConfig  # noqa: E402
from lensllm_hf.selector.result import card_folder_name  # noqa: E402

from tiny_models import write_select_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """(config path, the store every selection of this module shares)."""
    root = tmp_path_factory.mktemp("level")
    return write_select_config(root / "cfg"), root / "store"


def _predicted(capsys, tmp_path, source, model: str, at: float) -> tuple[dict, str]:
    """``lensllm predict``'s JSON and printed line for ``model`` at ``at``, at the source's own level."""
    out = tmp_path / "prediction.json"
    assert main(["predict", str(source), "--model", model, "--at", str(int(at)), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    return json.loads(out.read_text(encoding="utf-8")), printed


@pytest.mark.parametrize("strategy", ["grid", "adaptive", "halving"])
@pytest.mark.parametrize("level", [0.5, 0.8])
def test_the_level_reaches_the_table_json_cards_plot_and_predict(config, strategy, level, tmp_path, capsys):
    path, store = config
    out = tmp_path / "out"
    assert main(["select", str(path), "--level", str(level), "--strategy", strategy, "--store", str(store),
                 "--output-dir", str(out), "--no-progress"]) == 0
    pct = f"{100 * level:g}%"
    assert f"{pct} interval" in capsys.readouterr().out  # the printed table's header
    assert f"| {pct} interval |" in (out / "selection.md").read_text(encoding="utf-8")
    data = json.loads((out / "selection.json").read_text(encoding="utf-8"))
    assert data["level"] == level and data["selection"]["strategy"] == strategy
    ranking = Ranking.read_json(out / "selection.json")
    assert len(ranking.ranked) == 2
    for c, row in zip(ranking.candidates, data["ranking"], strict=True):
        low, high = c.fit.predict_interval([ranking.target], level)
        assert row["interval"] == [float(low[0]), float(high[0])]
        wide_low, wide_high = c.fit.predict_interval([ranking.target], 0.9)
        assert high[0] - low[0] < wide_high[0] - wide_low[0]  # narrower than the 90 % default
        card_folder = out / "cards" / card_folder_name(c.model)
        (card,) = load_fits(card_folder)
        assert card.level == level and list(card.interval) == row["interval"]
        for source in (out / "selection.json", card_folder):
            got, printed = _predicted(capsys, tmp_path, source, c.model, ranking.target)
            assert (got["level"], got["interval"], got["predicted_loss"]) == (level, row["interval"],
                                                                              row["predicted_loss"])
            assert f"{pct} interval" in printed

    # The same selection from Python (nothing left to train): its table and plot.
    selector = SelectConfig.from_yaml(path).selector(output_dir=tmp_path / "again", store=str(store), level=level,
                                                     strategy=strategy, progress=False)
    result = selector.run()
    assert result.level == result.fits.level == selector.from_store().level == level
    frame = result.ranking.set_index("model")
    fig = result.plot()
    ax = fig.axes[0]
    assert f"{pct} intervals" in ax.get_title(loc="left")
    for row in data["ranking"]:
        model = row["model"]
        assert [frame.loc[model, "interval_low"], frame.loc[model, "interval_high"]] == row["interval"]
        (band,) = [a for a in ax.collections if a.get_gid() == f"band:{model}"]
        at_target = sorted({float(y) for x, y in band.get_paths()[0].vertices if x == result.target_size})
        assert at_target == row["interval"]
