"""Fault injection: nothing lost, nothing unbounded.

Nothing lost: a killed map save leaves the old or the new map. Nothing unbounded: decompression
bombs are refused before decoding, replay memory does not depend on the recording's length.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from vl2spike_ros.data.datasets import read_image
from vl2spike_ros.io.decode import ImageTooLargeError, image_header_size
from vl2spike_ros.io.images import ImageDecodeError, compressed_msg_to_array, image_msg_to_array

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@pytest.fixture()
def fast_tmp(tmp_path):
    """Yield a tmpfs folder when there is one (fsync costs nothing there), else ``tmp_path``."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="vl2spike_faults_", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """Tiny Spikformer VPR weights (32 x 64 grey input, 16-d descriptors)."""
    import torch

    from vl2spike_ros.models import create_model, save_model

    torch.manual_seed(0)
    model = create_model("spikformer_vpr", embed_dim=16, T=1, descriptor_dim=16)
    return save_model(model.eval(), tmp_path_factory.mktemp("w") / "w.safetensors",
                      {"vpr": {"descriptor": "pooled"}})


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}


def test_killed_map_save_leaves_the_old_or_the_new_map(fast_tmp):
    """Kill (-9) a save before each of its file-system calls: old or new map, never an error.

    Saves over a map, over a format-1 map, onto the node's own map_dir and into a new folder:
    the folder loads as the old map until the commit and as the new one after it, never fails;
    the next save leaves no crash leftovers.
    """
    proc = subprocess.run([sys.executable, str(HERE / "_fault_driver.py"), str(fast_tmp)],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert set(result) == {"overwrite", "format1", "grow", "fresh"}
    for scenario, runs in result.items():
        killed = [r for r in runs if r["exit"] == 137]
        assert len(killed) >= 10, f"{scenario}: only {len(killed)} kill points"
        assert runs[-1]["exit"] == 0 and runs[-1]["loads"] == "new", runs[-1]
        before = "absent" if scenario == "fresh" else "old"
        outcomes = [r["loads"] for r in runs]
        # old (or no map) up to the commit, new from then on: never an error, never back
        first_new = outcomes.index("new")
        assert outcomes[:first_new] == [before] * first_new, (scenario, outcomes)
        assert outcomes[first_new:] == ["new"] * (len(runs) - first_new), (scenario, outcomes)
        assert 0 < first_new < len(runs) - 1
        assert all(r["leftovers"] == [] for r in runs), (scenario, runs)


# ----------------------------------------------------------------------------- decode guard
def png_bomb(width: int, height: int) -> bytes:
    """Build a valid grey PNG of zeros, row block by row block (never allocating the image)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    comp = zlib.compressobj(9)
    rows = b"\x00" * ((width + 1) * 100)  # filter byte 0 + zeros, 100 rows at a time
    idat = b"".join(comp.compress(rows) for _ in range(height // 100)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                              0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bomb_dir(tmp_path_factory) -> Path:
    """Make a folder holding one 20000 x 20000 PNG (about 0.4 MB compressed, 400 Mpx)."""
    folder = tmp_path_factory.mktemp("bomb")
    (folder / "bomb.png").write_bytes(png_bomb(20000, 20000))
    return folder


def _encoded(ext: str, shape) -> bytes:
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext,kind", [(".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"),
                                      (".webp", "webp"), (".tiff", "tiff"), (".ppm", "pnm"),
                                      (".pgm", "pnm")])
def test_header_sizes_of_every_folder_format(ext, kind):
    shape = (37, 53) if ext == ".pgm" else (37, 53, 3)
    assert image_header_size(_encoded(ext, shape)) == (53, 37, kind)


def test_bomb_refused_from_the_header_before_decoding(bomb_dir, monkeypatch):
    import vl2spike_ros.io.decode as decode

    data = (bomb_dir / "bomb.png").read_bytes()
    assert len(data) < 2_000_000
    monkeypatch.setattr(decode, "_imdecode_capturing", lambda *a: pytest.fail("decoded a bomb"))
    msg = SimpleNamespace(format="png", data=data)
    with pytest.raises(ImageTooLargeError, match=r"20000x20000 .* above the pixel limit"):
        compressed_msg_to_array(msg)
    with pytest.raises(ValueError, match=f"image {bomb_dir / 'bomb.png'}.*pixel limit"):
        read_image(bomb_dir / "bomb.png")
    small = SimpleNamespace(format="png", data=_encoded(".png", (40, 50)))
    with pytest.raises(ImageTooLargeError, match="1999"):
        compressed_msg_to_array(small, max_pixels=1999)
    raw = SimpleNamespace(height=100, width=100, encoding="mono8", is_bigendian=0, step=100,
                          data=bytes(10000))
    with pytest.raises(ImageTooLargeError, match="100x100"):
        image_msg_to_array(raw, max_pixels=9999)
    assert image_msg_to_array(raw, max_pixels=10000).shape == (100, 100)


def test_bomb_decode_stays_small_in_memory(bomb_dir):
    """Read the header only: RSS stays far below the 400 MB the decoded bomb would need."""
    code = ("import resource, sys\n"
            "from vl2spike_ros.data.datasets import read_image\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    read_image(sys.argv[1])\nexcept ValueError as e:\n    print(e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(bomb_dir / "bomb.png")],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    message, growth_mb = proc.stdout.strip().splitlines()[-2:]
    assert "pixel limit" in message
    assert int(growth_mb) < 50, f"peak RSS grew by {growth_mb} MB"


def test_map_build_on_a_bomb_fails_with_one_line_exit_2(bomb_dir, tiny_weights, tmp_path,
                                                        capsys):
    from vl2spike_ros.cli import main

    rc = main(["map", "build", str(bomb_dir), "--out", str(tmp_path / "m"),
               "--weights", str(tiny_weights)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "pixel limit" in err and "--max-pixels" in err
    assert not (tmp_path / "m" / "map.json").exists()
    with pytest.raises(SystemExit) as ei:  # argparse refuses a limit below 1
        main(["map", "build", str(bomb_dir), "--out", str(tmp_path / "m"), "--max-pixels", "0"])
    assert ei.value.code == 2


def test_truncated_and_corrupt_files_refused_with_one_clear_line(tmp_path, capfd):
    jpg, png = _encoded(".jpg", (60, 80, 3)), _encoded(".png", (60, 80, 3))
    cases = {"truncated JPEG": jpg[: len(jpg) // 2], "truncated PNG": png[: len(png) // 2],
             "CRC error": png[:60] + bytes([png[60] ^ 0xFF]) + png[61:]}
    for match, data in cases.items():
        with pytest.raises(ImageDecodeError, match=match):
            compressed_msg_to_array(SimpleNamespace(format="jpeg", data=data))
        (tmp_path / "f.img").write_bytes(data)
        with pytest.raises(ValueError, match=match):
            read_image(tmp_path / "f.img")  # cv2.imread would accept a truncated JPEG
    with pytest.raises(ImageDecodeError, match="unsupported image format"):
        compressed_msg_to_array(SimpleNamespace(format="gif", data=b"GIF89a" + bytes(40)))
    assert "libpng" not in capfd.readouterr().err  # refused before libpng could print


def test_decoder_messages_are_captured_and_throttled(monkeypatch, caplog, capfd):
    import vl2spike_ros.io.decode as decode

    jpg = bytearray(_encoded(".jpg", (120, 160, 3)))
    jpg[len(jpg) // 2] ^= 0xFF  # corrupt entropy data: libjpeg warns, still decodes
    log = decode._DecoderLog(period_s=3600.0)
    monkeypatch.setattr(decode, "DECODER_LOG", log)
    with caplog.at_level(logging.WARNING, logger="vl2spike_ros.io.decode"):
        for _ in range(5):
            assert compressed_msg_to_array(SimpleNamespace(format="jpeg", data=bytes(jpg))
                                           ).shape == (120, 160, 3)
    assert log.total == 5
    assert len([r for r in caplog.records if "image decoder" in r.message]) == 1
    assert "Corrupt JPEG data" in caplog.text
    assert "Corrupt JPEG data" not in capfd.readouterr().err  # not printed by libjpeg itself
    log.note("later", now=1e12)  # the period is over: the next message reports the count
    assert "(4 more since the last report)" in caplog.records[-1].message


def test_decoder_capture_passes_other_stderr_output_through(capfd):
    import vl2spike_ros.io.decode as decode

    os.write(2, b"before\n")
    img, msgs = decode._imdecode_capturing(np.frombuffer(_encoded(".png", (4, 4)), np.uint8),
                                           cv2.IMREAD_UNCHANGED)
    assert img.shape == (4, 4) and msgs == []
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


# ----------------------------------------------------------------------------- bags
def add_chunk_crcs(mcap: Path) -> int:
    """Fill in the (optional) uncompressed-data CRC-32 of every uncompressed mcap chunk.

    ``ros2 bag record`` writes them; rosbags' writer leaves them 0 (= unchecked).
    """
    data, pos, n = bytearray(mcap.read_bytes()), 8, 0
    while pos + 9 <= len(data) and data[pos] not in (0x0F, 0x02):  # data end / footer
        length = struct.unpack_from("<Q", data, pos + 1)[0]
        c = pos + 9
        if data[pos] == 0x06:
            slen = struct.unpack_from("<I", data, c + 28)[0]
            csize = struct.unpack_from("<Q", data, c + 32 + slen)[0]
            if slen == 0:
                rec = c + 40
                struct.pack_into("<I", data, c + 24, zlib.crc32(data[rec:rec + csize]))
                n += 1
        pos = c + length
    mcap.write_bytes(bytes(data))
    return n


def test_corrupt_mcap_chunk_is_reported(tmp_path):
    from vl2spike_ros.io.bags import read_image_bag, write_image_bag

    write_image_bag(tmp_path / "b", [np.full((24, 32), i, np.uint8) for i in range(30)])
    mcap = next((tmp_path / "b").glob("*.mcap"))
    assert add_chunk_crcs(mcap) >= 1
    assert len(list(read_image_bag(tmp_path / "b"))) == 30
    data = bytearray(mcap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    mcap.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt bag .*Chunk checksum mismatch"):
        list(read_image_bag(tmp_path / "b"))


# ----------------------------------------------------------------------------- replay / sources
def _scene(i: int, shape) -> np.ndarray:
    """Smooth frame i (compresses well) of ``shape`` [H, W] or [H, W, C]."""
    h, w = shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    img = ((x * (3 + i % 5) + y * (2 + i % 3)) * 255 // (h + w) % 256).astype(np.uint8)
    return img if len(shape) == 2 else np.repeat(img[..., None], shape[2], axis=2)


@pytest.fixture(scope="module")
def replay_map(tmp_path_factory, tiny_weights) -> Path:
    from vl2spike_ros.cli.cmd_map import build_map_from_source

    tmp = tmp_path_factory.mktemp("replay")
    (tmp / "db").mkdir()
    for i in range(6):
        cv2.imwrite(str(tmp / "db" / f"{i}.png"), _scene(i, (32, 64)))
    build_map_from_source(str(tmp / "db"), str(tmp / "map"), str(tiny_weights))
    return tmp / "map"


def _png_bag(path: Path, frames) -> Path:
    from vl2spike_ros.io.bags import BagWriteOptions, write_image_bag

    write_image_bag(path, frames, BagWriteOptions(compressed=True, compressed_format="png",
                                                  start_ns=10**9))
    return path


def _replay_peak_mb(bag: Path, map_dir: Path, weights: Path) -> tuple[int, float]:
    import tracemalloc

    from vl2spike_ros.cli.cmd_replay import ReplayOptions, run_replay

    tracemalloc.start()
    try:
        rows, _ = run_replay(ReplayOptions(str(bag), str(map_dir), str(weights), gt="none"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return len(rows), peak / 2**20


def test_replay_streams_frames_memory_independent_of_length(tmp_path, replay_map, tiny_weights):
    """Replay 5 vs 40 frames of 960x1280 RGB (3.5 MB each decoded): same peak memory.

    The peak traced memory does not grow with the recording (holding the frames would add
    123 MB).
    """
    shape = (960, 1280, 3)
    few = _png_bag(tmp_path / "few", (_scene(i, shape) for i in range(5)))
    many = _png_bag(tmp_path / "many", (_scene(i, shape) for i in range(40)))
    n_few, peak_few = _replay_peak_mb(few, replay_map, tiny_weights)
    n_many, peak_many = _replay_peak_mb(many, replay_map, tiny_weights)
    assert (n_few, n_many) == (5, 40)
    assert peak_many - peak_few < 10.0, (peak_few, peak_many)


MIXED = [(48, 64), (96, 128, 3), (60, 80, 4), (32, 64, 3), (120, 90)]


def test_mixed_sizes_and_channels_replay_and_map_build(tmp_path, replay_map, tiny_weights,
                                                       capsys):
    """Replay and map build bags mixing sizes and grey/RGB/RGBA frames, as the node does.

    Every frame is preprocessed on its own.
    """
    from vl2spike_ros.cli import main
    from vl2spike_ros.io.bags import write_image_bag
    from vl2spike_ros.vpr.placemap import PlaceMap

    frames = [_scene(i, shape) for i, shape in enumerate(MIXED)]
    write_image_bag(tmp_path / "raw", frames)
    _png_bag(tmp_path / "png", frames)
    for bag in ("raw", "png"):
        out = tmp_path / f"{bag}.json"
        assert main(["replay", str(tmp_path / bag), "--map", str(replay_map), "--weights",
                     str(tiny_weights), "--json", str(out)]) == 0, capsys.readouterr().err
        assert json.loads(out.read_text())["frames"] == len(MIXED)
        assert main(["map", "build", str(tmp_path / bag), "--out", str(tmp_path / f"m_{bag}"),
                     "--weights", str(tiny_weights)]) == 0, capsys.readouterr().err
        assert len(PlaceMap.load(tmp_path / f"m_{bag}")) == len(MIXED)
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.png"), f)
    assert main(["replay", str(folder), "--map", str(replay_map), "--weights",
                 str(tiny_weights)]) == 0, capsys.readouterr().err


# ----------------------------------------------------------------------------- node parts
def test_reload_refuses_to_drop_unsaved_places(replay_map, tiny_weights, tmp_path):
    """Refuse a reload that would drop unsaved places, saying how many.

    84 -> 40 with success=True was the finding. A reload is refused unless asked to discard the
    places; a save makes them safe.
    """
    from vl2spike_ros.ros.engine import Engine, EngineError
    from vl2spike_ros.vpr.pipeline import VPRPipeline

    engine = Engine(VPRPipeline(str(tiny_weights), str(replay_map)), str(replay_map), "w")
    n = len(engine)
    for i in range(3):
        engine.process(_scene(10 + i, (32, 64)))
        engine.add_last({"frame": 100 + i})
    assert engine.unsaved == 3
    with pytest.raises(EngineError, match=r"3 place\(s\) mapped since the last save"):
        engine.reload_map(str(replay_map))
    assert len(engine) == n + 3  # nothing lost
    engine.save_map(tmp_path / "saved")
    assert engine.unsaved == 0 and engine.reload_map(str(replay_map)) == n
    engine.process(_scene(20, (32, 64)))
    engine.add_last({})
    assert engine.reload_map(str(replay_map), discard_unsaved=True) == n


def test_diagnostics_warn_clears_once_frames_are_good_again():
    from vl2spike_ros.ros.frames import BAD_FRAME_WARN_S, NodeStats

    stats = NodeStats()
    assert not stats.bad_recently()
    stats.bad("truncated JPEG")
    now = stats.last_bad_time
    assert stats.bad_recently(now + 1e6)  # the latest frame was bad: WARN however long ago
    stats.record(1.0, 1.0, None, None, True)
    assert stats.bad_recently(now + 0.5 * BAD_FRAME_WARN_S)
    assert not stats.bad_recently(stats.last_good_time + BAD_FRAME_WARN_S + 0.1)
    stats.error("RuntimeError: boom")
    assert stats.bad_recently(stats.last_bad_time + 1e6) and stats.errors == 1


def test_transport_losses_estimated_from_stamp_gaps():
    from vl2spike_ros.ros.frames import MAX_GAP_PERIODS, StampGaps

    gaps, period = StampGaps(), 33_000_000
    stamps = [i * period for i in range(10)] + [12 * period, 13 * period, 17 * period]
    assert [gaps.observe(s) for s in stamps][-3:] == [2, 0, 3]
    assert gaps.missing == 5
    gaps.observe(17 * period + (MAX_GAP_PERIODS + 5) * period)  # a pause, not losses
    gaps.observe(5)  # stamps went back (camera restarted): estimate restarts
    assert gaps.missing == 5
    jitter = StampGaps()
    for i in range(50):
        jitter.observe(i * period + (i % 3) * 2_000_000)
    assert jitter.missing == 0


# ----------------------------------------------------------------------------- map identity
def test_map_model_check_cannot_be_bypassed(tmp_path, replay_map, tiny_weights, capsys):
    """Refuse bypasses of the map/model check in replay, with one line.

    ``"model": {}`` / ``"model": "x"`` in map.json, and an edited weights JSON sidecar (same
    safetensors file, so the same weights_hash).
    """
    from vl2spike_ros.cli import main

    bag = tmp_path / "q"
    bag.mkdir()
    cv2.imwrite(str(bag / "0.png"), _scene(0, (32, 64)))
    for model in ({}, "x"):
        m = tmp_path / f"m_{type(model).__name__}"
        shutil.copytree(replay_map, m)
        meta = json.loads((m / "map.json").read_text())
        (m / "map.json").write_text(json.dumps({**meta, "model": model}))
        rc = main(["replay", str(bag), "--map", str(m), "--weights", str(tiny_weights)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "field 'model'" in err, err
    w = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, w)
    sidecar = json.loads(tiny_weights.with_suffix(".json").read_text())
    sidecar["metadata"]["vpr"]["input_norm"] = "patch8"
    w.with_suffix(".json").write_text(json.dumps(sidecar))
    rc = main(["replay", str(bag), "--map", str(replay_map), "--weights", str(w)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "fingerprint" in err and "weights_hash" not in err, err
