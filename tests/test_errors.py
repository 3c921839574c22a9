"""Errors carry what went wrong as attributes (as huggingface_hub's do), besides their one-line message."""

from __future__ import annotations

import pickle

import pytest

from lensllm_hf import errors
from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.fit import Fit
from lensllm_hf.engine.laws import PowerLaw
from lensllm_hf.errors import ConfigError, CurveError, FitError, LensLLMError


def test_a_fit_read_from_a_file_names_the_law_and_the_field():
    with pytest.raises(FitError) as error:
        Fit.from_dict({"law": "cubic"}, where="card.fit")
    assert (error.value.law, error.value.term) == (None, "card.fit.law")
    good = {"law": "power", "params": {"B": 1.0, "beta": 0.5, "E": 1.0}, "sizes": [200, 400, 800],
            "losses": [3.0, 2.5, 2.2], "used": [True, True, True], "terms": {"noise_var": 0.01}}
    with pytest.raises(FitError) as error:
        Fit.from_dict({**good, "used": "yes"})
    assert (error.value.law, error.value.term) == ("power", "fit.used")


def test_a_bad_level_names_the_key_and_the_value():
    fit = PowerLaw().fit([200, 400, 800, 1600], [3.0, 2.5, 2.2, 2.05]).to_fit()
    with pytest.raises(ConfigError) as error:
        fit.predict_interval([1e5], level=90)
    assert (error.value.key, error.value.value) == ("level", 90)


def test_a_missing_curve_table_names_the_file(tmp_path):
    with pytest.raises(CurveError) as error:
        CurveTable.read_csv(tmp_path / "nope.csv")
    assert error.value.path == str(tmp_path / "nope.csv") and "no such file" in str(error.value)


def test_every_error_is_a_lensllm_error_and_survives_pickling():
    """The CLI's exit 2 catches LensLLMError; Ray sends errors between processes by pickling them."""
    for name in errors.__all__:
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, Exception) and not issubclass(cls, Warning):
            assert issubclass(cls, LensLLMError), name
    error = pickle.loads(pickle.dumps(ConfigError("budget=0: must be at least 1", key="budget", value=0,
                                                  path="select.yaml")))
    assert (str(error), error.key, error.value, error.path) == ("budget=0: must be at least 1", "budget", 0,
                                                               "select.yaml")
    hub = pickle.loads(pickle.dumps(errors.HubError("no access with hf_abcdefgh123", source="a/b", status=403)))
    assert (str(hub), hub.status, hub.source) == ("no access with hf_***", 403, "a/b")


def test_the_earlier_names_stay_importable():
    from lensllm_hf.callbacks import CallbackError
    from lensllm_hf.hub_cards import HubAuthError, HubNotFoundError, HubPermissionError, HubUnavailableError
    from lensllm_hf.records import RecordError, RecordWarning, SchemaError

    assert CallbackError is ConfigError
    assert HubAuthError is HubNotFoundError is HubPermissionError is errors.HubError
    assert HubUnavailableError is errors.NetworkError
    assert (RecordError, SchemaError, RecordWarning) == (errors.RecordError, errors.SchemaError, errors.RecordWarning)
