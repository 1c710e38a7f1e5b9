"""PlaceMap: round trip, model mismatch refusal, corrupt/truncated files, map.json schema."""
import json
import logging

import numpy as np
import pytest

import faiss

from vl2spike_ros.vpr.placemap import (FORMAT_V1, MapFormatError, MapMismatchError, PlaceMap,
                                       index_path)

META = {"variant": "spikformer_vpr", "weights_hash": "abc", "descriptor_dim": 8,
        "input_size": [1, 32, 64]}


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture()
def saved_map(tmp_path):
    pm = PlaceMap(8, META)
    x = _unit(20, 8)
    pm.add(x, [{"frame": i, "stamp_ns": 100 * i, "pose": [i, 0, 0, 0, 0, 0, 1],
                "frame_id": "map"} for i in range(20)])
    pm.save(tmp_path / "m")
    return tmp_path / "m", x


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_round_trip(tmp_path, factory):
    x = _unit(50, 8, seed=1)
    pm = PlaceMap(8, META, factory)
    ids = pm.add(x, [{"frame": i} for i in range(50)])
    assert ids.tolist() == list(range(50))
    pm.save(tmp_path / "m")
    back = PlaceMap.load(tmp_path / "m", expect_model_meta=META)
    assert len(back) == 50 and back.factory == factory
    s, i = back.search(x[[3, 7]], top_k=2)
    assert i[:, 0].tolist() == [3, 7]
    assert s[:, 0] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert back.place(7) == {"place_id": 7, "frame": 7}
    np.testing.assert_allclose(back.similarity(x[:2]), x[:2] @ x.T, atol=1e-5)


def test_metadata_and_bad_input(saved_map):
    path, x = saved_map
    pm = PlaceMap.load(path)
    assert pm.place(3)["pose"][0] == 3 and pm.place(3)["frame_id"] == "map"
    with pytest.raises(KeyError):
        pm.place(20)
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        pm.search(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="metadata"):
        pm.add(x[:2], [{}])
    with pytest.raises(ValueError, match="factory"):
        PlaceMap(8, META, "NotAnIndex")


@pytest.mark.parametrize("change", [{"variant": "spikformer_cifar"}, {"weights_hash": "zzz"},
                                    {"descriptor_dim": 16}])
def test_mismatch_refused(saved_map, change):
    path, _ = saved_map
    with pytest.raises(MapMismatchError, match="different model") as ei:
        PlaceMap.load(path, expect_model_meta={**META, **change})
    assert isinstance(ei.value, ValueError)
    assert next(iter(change)) in str(ei.value)


def test_truncated_index(saved_map):
    path, _ = saved_map
    idx = index_path(path)
    idx.write_bytes(idx.read_bytes()[: idx.stat().st_size // 2])
    with pytest.raises(MapFormatError, match="corrupt or truncated"):
        PlaceMap.load(path)


def test_corrupt_index_same_size(saved_map):
    path, _ = saved_map
    idx = index_path(path)
    data = bytearray(idx.read_bytes())
    data[:8] = b"garbage!"
    idx.write_bytes(bytes(data))
    with pytest.raises(MapFormatError):
        PlaceMap.load(path)
    with pytest.raises(MapFormatError, match="cannot read"):
        PlaceMap.load(path, verify=False)


def test_truncated_or_wrong_json(saved_map, tmp_path):
    path, _ = saved_map
    meta = path / "map.json"
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])
    with pytest.raises(MapFormatError, match="map.json"):
        PlaceMap.load(path)
    meta.write_text(json.dumps({"format": "other"}))
    with pytest.raises(MapFormatError):
        PlaceMap.load(path)
    with pytest.raises(FileNotFoundError):
        PlaceMap.load(tmp_path / "nothing")


def _edit_json(path, **changes):
    meta = json.loads((path / "map.json").read_text())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            meta[outer][inner] = value
        else:
            meta[key] = value
    (path / "map.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("changes,message", [
    ({"model": {}}, "lacks 'descriptor_dim'"),
    ({"model": "x"}, r"field 'model' must be an object, got \"x\" \(str\)"),
    ({"model": None}, "field 'model' must be an object"),
    ({"model.weights_hash": 123}, "field 'model.weights_hash' must be a string"),
    ({"model.descriptor_dim": "8"}, "field 'model.descriptor_dim' must be an integer"),
    ({"model.input_size": [1, 32]}, "input_size' must be 3 positive integers"),
    ({"n_places": "20"}, r"field 'n_places' must be an integer, got \"20\" \(str\)"),
    ({"dim": True}, "field 'dim' must be an integer, got true"),
    ({"places": []}, "field 'places' must be an object"),
    ({"format": "vl2spike-placemap/9"}, "field 'format' is \"vl2spike-placemap/9\", expected"),
    ({"index_file": "../../etc/passwd"}, "field 'index_file' must name an index file"),
    ({"index_crc32": 5}, "field 'index_crc32' must be a string"),
    ({"n_places": -1}, "field 'n_places' must be >= 0"),
])
def test_map_json_schema_gives_one_clear_line(saved_map, changes, message):
    path, _ = saved_map
    _edit_json(path, **changes)
    with pytest.raises(MapFormatError, match=message) as ei:
        PlaceMap.load(path, expect_model_meta=META)
    assert "\n" not in str(ei.value) and "map.json" in str(ei.value)


def test_model_identity_cannot_be_bypassed(saved_map):
    """A map that records less than the model has is refused, whatever the values."""
    path, _ = saved_map
    _edit_json(path, model={"descriptor_dim": 8})
    with pytest.raises(MapMismatchError, match="does not record the model's variant, "
                                               "weights_hash, input_size"):
        PlaceMap.load(path, expect_model_meta=META)
    assert len(PlaceMap.load(path)) == 20  # inspecting without a model still works


def test_fingerprint_compared_when_both_sides_have_it(tmp_path, caplog):
    x = _unit(4, 8)
    pm = PlaceMap(8, {**META, "fingerprint": "f" * 16})
    pm.add(x)
    pm.save(tmp_path / "m")
    PlaceMap.load(tmp_path / "m", expect_model_meta={**META, "fingerprint": "f" * 16})
    PlaceMap.load(tmp_path / "m", expect_model_meta=META)  # model without one: hashes checked
    with pytest.raises(MapMismatchError, match="fingerprint"):
        PlaceMap.load(tmp_path / "m", expect_model_meta={**META, "fingerprint": "0" * 16})
    old = PlaceMap(8, META)  # an older map: no fingerprint recorded -> loads, with a warning
    old.add(x)
    old.save(tmp_path / "old")
    with caplog.at_level(logging.WARNING, logger="vl2spike_ros.vpr.placemap"):
        PlaceMap.load(tmp_path / "old", expect_model_meta={**META, "fingerprint": "f" * 16})
    assert "records no model fingerprint" in caplog.text


def test_format_1_maps_still_load_and_are_replaced_cleanly(tmp_path):
    """Load a map of the previous format (fixed index.faiss name); a save over it cleans up.

    Only the new files remain after the save.
    """
    x = _unit(6, 8)
    path = tmp_path / "m"
    pm = PlaceMap(8, META)
    pm.add(x, [{"frame": i} for i in range(6)])
    pm.save(path)
    meta = json.loads((path / "map.json").read_text())
    index_path(path).rename(path / "index.faiss")
    del meta["index_file"]
    (path / "map.json").write_text(json.dumps({**meta, "format": FORMAT_V1}))
    assert PlaceMap.load(path, expect_model_meta=META).place(5)["frame"] == 5
    pm.add(x[:1], [{"frame": 6}])
    pm.save(path)
    assert len(PlaceMap.load(path)) == 7
    assert sorted(p.name for p in path.iterdir()) == sorted(["map.json", index_path(path).name])


def test_crash_leftovers_are_ignored_then_removed(saved_map):
    path, x = saved_map
    (path / ".map.json.abc123.tmp").write_text("{")
    (path / ".index-0123456789abcdef.faiss.xyz.tmp").write_bytes(b"partial")
    (path / "index-fedcba9876543210.faiss").write_bytes(b"orphan of a crashed save")
    (path / "notes.txt").write_text("the user's own file stays")
    assert len(PlaceMap.load(path)) == 20
    pm = PlaceMap.load(path)
    pm.save(path)
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["map.json", "notes.txt", index_path(path).name])


def test_reader_follows_a_concurrent_save(saved_map, monkeypatch):
    """A reader that read map.json just before a save replaced the index retries once."""
    import vl2spike_ros.vpr.placemap as placemap

    path, x = saved_map
    real = placemap._read_meta
    calls = []

    def read_then_save(map_dir):
        meta = real(map_dir)
        if not calls:
            calls.append(1)
            newer = PlaceMap(8, META)
            newer.add(x[:3])
            newer.save(path)  # removes the index file ``meta`` names
        return meta

    monkeypatch.setattr(placemap, "_read_meta", read_then_save)
    assert len(PlaceMap.load(path)) == 3


def test_save_writes_an_index_faiss_can_read(saved_map):
    path, _ = saved_map
    assert faiss.read_index(str(index_path(path))).ntotal == 20
