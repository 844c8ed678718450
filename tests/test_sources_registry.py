"""Real data sources by name (dipkd/datasets/sources/): converter, published counts and
synthetic stand-in in one entry, read by params validation, prepare and the converters."""
import pytest

from dipkd.config.params import ParamsError, dataset_spec, validate
from dipkd.datasets import prepare
from dipkd.datasets.sources import REAL_SOURCES, SOURCES, DataSource
from dipkd.datasets.synthetic import PRESETS


def test_entries_and_stand_ins():
    assert SOURCES[0] == "synthetic" and sorted(SOURCES[1:]) == ["hrsid", "ssdd"]
    assert REAL_SOURCES["ssdd"].published == {"images": 1160, "ships": 2456}
    assert all(s.stand_in in PRESETS for s in REAL_SOURCES.values())


def test_a_synthetic_dataset_named_like_a_source_gets_its_stand_in(params):
    del params["data"]["hrsid"]["preset"]
    assert dataset_spec(params, "hrsid").preset == "hrsid-like"
    params["data"]["hrsid"]["source"] = "sar-ship-v2"
    with pytest.raises(ParamsError, match="data source for hrsid"):
        validate(params)


def test_prepare_dispatches_through_the_registry(tmp_path, monkeypatch):
    """A new source is one entry: prepare finds its converter there."""
    calls = []
    monkeypatch.setitem(REAL_SOURCES, "toy", DataSource(
        "toy", lambda root, out, options: calls.append((root, out, options)) or {"ok": 1},
        {"images": 1, "ships": 1}, "ssdd-like"))
    release = tmp_path / "release"
    release.mkdir()
    assert prepare.prepare_real("toy", "toy", {"path": str(release), "x": 2},
                                tmp_path / "out") == {"ok": 1}
    assert calls == [(release, tmp_path / "out", {"path": str(release), "x": 2})]
