"""PlaceMap: round trip, model mismatch refusal, corrupt/truncated files."""
import json

import numpy as np
import pytest

from vl2spike_ros.vpr.placemap import MapFormatError, MapMismatchError, PlaceMap

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
    idx = path / "index.faiss"
    idx.write_bytes(idx.read_bytes()[: idx.stat().st_size // 2])
    with pytest.raises(MapFormatError, match="corrupt or truncated"):
        PlaceMap.load(path)


def test_corrupt_index_same_size(saved_map):
    path, _ = saved_map
    idx = path / "index.faiss"
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
