"""``vl2spike demo``: the main job end to end, offline, on the built-in default.

1. load the packaged default VPR weights (or ``weights``);
2. build a place map from the Nordland *winter* held-out segment (last 40 % of places);
3. write the *summer* held-out segment into a ROS 2 bag (mcap);
4. start the real ``vpr_node`` (rclpy, loopback-only DDS) and replay the bag into it at camera
   rate, collecting the published ``vpr/candidates`` and ``/diagnostics``;
5. score the node's matches (Recall@1/5, PR curve), compare them with the offline pipeline on
   the same frames, and write ``report.json`` + ``pr_curve.png``.

Recall is computed over the frames the node answered (``frames_processed``); frames it dropped
because it was busy (sensor-data QoS, depth 1) are reported as ``frames_sent - frames_processed``.
The node subprocess is stopped on every exit path (error, Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from vl2spike_ros.atomic import write_json_atomic
from vl2spike_ros.bench.ros.harness import Prober, publish, start_node, stop_node, wait_ready
from vl2spike_ros.data.datasets import (NORDLAND_TRAIN_FRACTION, load_images, nordland_files,
                                        nordland_split_range)
from vl2spike_ros.ros.env import apply_loopback_env

log = logging.getLogger(__name__)
IMAGE_TOPIC = "/camera/image_raw"
BUILD_WEIGHTS_HINT = "build them with `make weights` (vl2spike weights build)"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (all but ``out_dir`` have working defaults)."""

    out_dir: Path
    data_root: Path | None = None
    weights: Path | None = None
    rate_hz: float = 30.0
    train_frac: float = NORDLAND_TRAIN_FRACTION
    tolerance: int = 1
    top_k: int = 5
    seq_len: int = 1
    limit: int | None = None
    storage: str = "mcap"
    startup_timeout_s: float = 120.0
    num_threads: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        checks = [(self.rate_hz > 0 and math.isfinite(self.rate_hz), f"rate_hz {self.rate_hz}"),
                  (0.0 < self.train_frac < 1.0, f"train_frac {self.train_frac}"),
                  (self.tolerance >= 0, f"tolerance {self.tolerance}"),
                  (self.top_k >= 1, f"top_k {self.top_k}"),
                  (self.seq_len >= 1, f"seq_len {self.seq_len}"),
                  (self.limit is None or self.limit >= 1, f"limit {self.limit}"),
                  (self.storage in ("mcap", "sqlite3"), f"storage {self.storage!r}"),
                  (self.startup_timeout_s > 0, f"startup_timeout_s {self.startup_timeout_s}"),
                  (self.num_threads >= 1, f"num_threads {self.num_threads}")]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise ValueError(f"invalid demo setting(s): {', '.join(bad)} (rate, timeout > 0; "
                             "0 < train_frac < 1; tolerance >= 0; "
                             "top_k, seq_len, limit, num_threads >= 1; "
                             "storage mcap|sqlite3)")


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


@contextmanager
def timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall seconds of the ``with`` body to ``timings[key]``."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        timings[key] = round(timings.get(key, 0.0) + time.monotonic() - t0, 3)


def log_tail(path: Path, chars: int = 2000) -> str:
    """Last ``chars`` characters of a log file ('' when absent)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def resolve_weights(weights: Path | None) -> Path:
    """Return the weights file to use: ``weights`` or the packaged default (error if missing)."""
    from vl2spike_ros.models import default_vpr_weights

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"VPR weights {path} not found")
        return path
    path = default_vpr_weights()
    if not path.is_file():
        raise FileNotFoundError(f"the packaged default VPR weights {path} do not exist: "
                                f"{BUILD_WEIGHTS_HINT}, or pass --weights PATH")
    return path


def nordland_dir(data_root: Path | None) -> Path:
    """Return ``<data root>/nordland`` with both seasons, else FileNotFoundError naming the fix."""
    from vl2spike_ros.paths import data_root as default_root

    root = Path(data_root) if data_root else default_root()
    nordland = root / "nordland"
    missing = [s for s in ("winter", "summer") if not (nordland / s).is_dir()]
    if missing:
        raise FileNotFoundError(f"Nordland data not found: {nordland} has no "
                                f"{' or '.join(missing)}/ folder (set VL2SPIKE_DATA_ROOT or "
                                "--data-root to the folder holding nordland/)")
    return nordland


def load_heldout(nordland: Path, train_frac: float, limit: int | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(winter grey [N,H,W], summer RGB [N,H,W,3], place index [N]) of the held-out segment."""
    winter, summer = nordland_files(nordland, "winter"), nordland_files(nordland, "summer")
    if len(winter) != len(summer):
        raise ValueError(f"Nordland seasons differ in length: {len(winter)} winter vs "
                         f"{len(summer)} summer frames (same number = same place)")
    idx = np.asarray(nordland_split_range(len(winter), "test", train_frac))[:limit]
    if idx.size == 0:
        raise ValueError(f"the Nordland held-out segment is empty (train_frac {train_frac})")
    return (load_images([winter[i] for i in idx], grayscale=True),
            load_images([summer[i] for i in idx], grayscale=False), idx)


def prepare(cfg: DemoConfig, nordland: Path, weights: Path,
            timings: dict[str, float]) -> dict[str, Any]:
    """Weights, map of winter held-out places and summer held-out bag; returns paths + sizes."""
    from vl2spike_ros.io.bags import BagWriteOptions, write_image_bag
    from vl2spike_ros.vpr.pipeline import build_map
    from vl2spike_ros.vpr.place import load_place_descriptor

    with timed(timings, "load_model_s"):
        place = load_place_descriptor(weights)
        meta = place.model_meta()
    say(f"weights: {weights} ({meta['variant']}, sha256 {meta['weights_hash']}), "
        f"{meta['descriptor_dim']}-d descriptors")
    with timed(timings, "load_images_s"):
        winter, summer, idx = load_heldout(nordland, cfg.train_frac, cfg.limit)
    n = len(idx)
    metas = [{"frame": int(i), "source": f"nordland/winter/images-{int(i):05d}.png"} for i in idx]
    with timed(timings, "map_build_s"):
        map_dir = build_map(place, winter, metas).save(cfg.out_dir / "map_winter_heldout")
    say(f"map: {n} winter held-out places (frames {idx[0]}..{idx[-1]}) -> {map_dir}")
    bag = cfg.out_dir / "summer_heldout_bag"
    with timed(timings, "bag_write_s"):
        write_image_bag(bag, list(summer), BagWriteOptions(
            topic=IMAGE_TOPIC, storage=cfg.storage, encoding="rgb8", rate_hz=cfg.rate_hz,
            overwrite=True))
    say(f"bag: {n} summer held-out frames, rgb8 at {cfg.rate_hz:g} Hz ({cfg.storage}) -> {bag}")
    return {"weights": weights, "map_dir": Path(map_dir), "bag": bag, "n": n,
            "first_frame": int(idx[0]), "model_meta": meta}


def _bag_messages(bag: Path) -> tuple[list[Any], np.ndarray]:
    """Read the bag's frames as rclpy Image messages, with their bag stamps (ns)."""
    from sensor_msgs.msg import Image

    from vl2spike_ros.io.bags import read_image_bag
    from vl2spike_ros.io.images import array_to_image_msg

    msgs, stamps = [], []
    for frame in read_image_bag(bag):
        msgs.append(array_to_image_msg(frame.image, "rgb8", msg_cls=Image))
        stamps.append(frame.stamp_ns)
    if not msgs:
        raise ValueError(f"bag {bag} holds no image frames")
    return msgs, np.asarray(stamps, dtype=np.int64)


def _play(rec: Prober, msgs: list[Any],
          bag_stamps: np.ndarray) -> tuple[list[int], float]:
    """Publish ``msgs`` with the bag's inter-frame timing; returns (publish stamps, wall s)."""
    from tqdm import tqdm

    sent, t0 = [], time.monotonic()
    offsets = (bag_stamps - bag_stamps[0]) / 1e9
    for msg, off in zip(tqdm(msgs, desc="[demo] replay", unit="frame", disable=None), offsets):
        time.sleep(max(0.0, t0 + off - time.monotonic()))
        sent.append(publish(rec, msg))
    return sent, time.monotonic() - t0


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM/SIGHUP raise KeyboardInterrupt, so cleanup code runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _scoped_loopback_env(log_dir: Path) -> Iterator[dict[str, str]]:
    """Loopback-only DDS env (fresh domain id) in ``os.environ``, restored afterwards."""
    saved = dict(os.environ)
    try:
        yield apply_loopback_env(log_dir=str(log_dir))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _node_failed(what: str, node_log: Path) -> RuntimeError:
    return RuntimeError(f"{what}; last lines of the node log {node_log}:\n{log_tail(node_log)}")


def _session(cfg: DemoConfig, proc: subprocess.Popen, msgs: list[Any], bag_stamps: np.ndarray,
             node_log: Path, timings: dict[str, float]) -> dict[str, Any]:
    """Wait for the node, replay, collect; raises with the node log tail if the node fails."""
    rec = Prober(compressed=False, keep_candidates=True)
    try:
        with timed(timings, "node_start_s"):
            try:
                wait_ready(rec, msgs, proc, cfg.startup_timeout_s)
            except RuntimeError as exc:
                raise _node_failed(str(exc), node_log) from None
            time.sleep(0.5)
            rec.clear()
        with timed(timings, "replay_s"):
            sent, wall = _play(rec, msgs, bag_stamps)
            rec.drain(sent[-1])  # trailing matches and one more /diagnostics message
        if proc.poll() is not None:
            raise _node_failed(f"vpr_node exited with {proc.returncode} during the replay",
                               node_log)
        with rec.lock:
            return {"sent": sent, "wall_s": wall, "candidates": dict(rec.candidates),
                    "latencies": dict(rec.latencies), "diag": dict(rec.diag)}
    finally:
        rec.close()


def run_node(cfg: DemoConfig, weights: Path, map_dir: Path, bag: Path,
             timings: dict[str, float]) -> dict[str, Any]:
    """Replay ``bag`` through a real ``vpr_node``; returns what was sent and received."""
    from vl2spike_ros.bench.ros.fixtures import write_params_file

    params = {"weights": str(weights), "map_dir": str(map_dir), "image_topic": "image",
              "top_k": cfg.top_k, "sequence_length": cfg.seq_len, "num_threads": 1,
              "match_threshold": 0.0,
              "diagnostics_period_s": 1.0}
    params_file = write_params_file(cfg.out_dir / "vpr_node_params.yaml", params)
    with timed(timings, "bag_to_msgs_s"):
        msgs, bag_stamps = _bag_messages(bag)
    node_log = cfg.out_dir / "vpr_node.log"
    with _sigterm_as_interrupt(), _scoped_loopback_env(cfg.out_dir / "ros_log") as ros_env:
        t0 = time.monotonic()
        proc, failed = start_node(params_file, node_log), True
        try:
            say(f"vpr_node started (pid {proc.pid}, ROS_DOMAIN_ID {ros_env['ROS_DOMAIN_ID']}, "
                f"loopback-only DDS); waiting for it to answer ...")
            got = _session(cfg, proc, msgs, bag_stamps, node_log, timings)
            failed = False
        finally:  # after an error or Ctrl-C: SIGKILL if it has not stopped within 5 s
            with timed(timings, "node_stop_s"):
                rc = stop_node(proc, timeout=5.0 if failed else 20.0)
            say(f"vpr_node stopped (exit code {rc}); log: {node_log}")
        timings["node_total_s"] = round(time.monotonic() - t0, 3)
    return {**got, "node_exit_code": rc, "node_log": str(node_log)}


def score(cfg: DemoConfig, prep: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Recall/PR of the node's matches (query i shows map place i, +-tolerance frames)."""
    from vl2spike_ros.vpr.evaluation import correct_by_frames, evaluate_ranked

    sent, cands, lat = got["sent"], got["candidates"], got["latencies"]
    done = [(i, s) for i, s in enumerate(sent) if s in cands and s in lat]
    if not done:
        raise _node_failed("vpr_node published no matches for the replayed frames",
                           Path(got["node_log"]))
    k = min(cfg.top_k, prep["n"])
    ids = np.full((len(done), k), -1, np.int64)
    scores = np.full((len(done), k), -np.inf, np.float32)
    for row, (_, s) in enumerate(done):
        c = cands[s][:k]
        ids[row, :len(c)], scores[row, :len(c)] = c["id"], c["score"]
    q = np.array([i for i, _ in done])
    ns = tuple(n for n in (1, 5, 10, 20) if n <= k)
    metrics = evaluate_ranked(scores, correct_by_frames(ids, q, cfg.tolerance), ns)
    latency = np.array([lat[s][1] for _, s in done])
    diag = got["diag"]
    return {"metrics": metrics, "query_index": q, "top1": ids[:, 0],
            "frames_sent": len(sent), "frames_processed": len(done),
            "latency_ms_p50": float(np.percentile(latency, 50)),
            "latency_ms_p95": float(np.percentile(latency, 95)),
            "latency_ms_max": float(latency.max()),
            "fps": len(done) / got["wall_s"], "replay_wall_s": got["wall_s"],
            "energy_mj_per_frame": _diag_float(diag, "energy_mj_per_frame"),
            "mean_firing_rate": _diag_float(diag, "mean_firing_rate"),
            "node_inference_ms_p50": _diag_float(diag, "inference_ms_p50"),
            "node_diagnostics": diag, "node_exit_code": got["node_exit_code"]}


def _diag_float(diag: dict[str, str], key: str) -> float | None:
    try:
        return float(diag[key])
    except (KeyError, ValueError):
        return None


def offline_agreement(weights: Path, prep: dict[str, Any], res: dict[str, Any],
                      top_k: int, seq_len: int = 1) -> float:
    """Percent of processed frames whose node top-1 equals the offline VPRPipeline's top-1."""
    from tqdm import tqdm

    from vl2spike_ros.io.bags import read_image_bag
    from vl2spike_ros.vpr.pipeline import VPRPipeline

    pipe = VPRPipeline(weights, prep["map_dir"], top_k=top_k, seq_len=seq_len, energy=False)
    frames = [f.image for f in read_image_bag(prep["bag"])]
    todo = tqdm(res["query_index"], desc="[demo] offline check", unit="frame",
                disable=None)
    offline = np.array([pipe.process(frames[i]).best_id for i in todo])
    return float(100.0 * np.mean(offline == res["top1"]))


def build_report(cfg: DemoConfig, prep: dict[str, Any], res: dict[str, Any], agree: float,
                 timings: dict[str, float]) -> dict[str, Any]:
    """Build the JSON report (no private curve arrays)."""
    from vl2spike_ros.vpr.evaluation import strip_curves

    m = res["metrics"]
    keys = ("frames_sent", "frames_processed", "latency_ms_p50", "latency_ms_p95",
            "latency_ms_max", "fps", "replay_wall_s", "energy_mj_per_frame", "mean_firing_rate",
            "node_inference_ms_p50", "node_diagnostics", "node_exit_code")
    report = {
        "recall": m["recall"], "pr_auc": m["pr_auc"], "recall_at_100p": m["recall_at_100p"],
        "recall_over": "frames_processed (frames the node answered)",
        **{k: res[k] for k in keys},
        "top1_agreement_with_offline_pipeline_pct": agree,
        "places": prep["n"], "first_heldout_frame": prep["first_frame"],
        "weights": str(prep["weights"]), "model": prep["model_meta"],
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "ground_truth": f"summer held-out frame i = winter place i, +-{cfg.tolerance} frames",
        "timings_s": timings,
    }
    return strip_curves(report)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """``torch.set_num_threads(n)`` within the block (restored after)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run steps 1-5 of the module docstring; return the report (also written to ``out_dir``).

    Torch in this process uses ``cfg.num_threads`` (default 1: the model is tiny, and extra
    threads only help on an idle machine; on a shared one they made map building and the
    offline check 2-15x slower). The node always runs with one thread.
    """
    with torch_threads(cfg.num_threads):
        return _run_demo(cfg)


def _run_demo(cfg: DemoConfig) -> dict[str, Any]:
    from vl2spike_ros.vpr.evaluation import plot_pr

    t0, timings = time.monotonic(), {}
    nordland, weights = nordland_dir(cfg.data_root), resolve_weights(cfg.weights)  # fail early
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    say(f"output folder: {cfg.out_dir}")
    prep = prepare(cfg, nordland, weights, timings)
    got = run_node(cfg, prep["weights"], prep["map_dir"], prep["bag"], timings)
    with timed(timings, "scoring_s"):
        res = score(cfg, prep, got)
        agree = offline_agreement(prep["weights"], prep, res, cfg.top_k, cfg.seq_len)
        m = res["metrics"]
        plot_pr({"vpr_node (summer query vs winter map)": m["_curve"]},
                cfg.out_dir / "pr_curve.png",
                title=f"Nordland held-out: {res['frames_processed']} queries vs "
                      f"{prep['n']} places\n"
                      f"R@1 {m['recall']['r1']:.1f}% (tolerance +-{cfg.tolerance} frames, "
                      f"sequence length {cfg.seq_len})")
    timings["total_s"] = round(time.monotonic() - t0, 3)
    report = build_report(cfg, prep, res, agree, timings)
    write_json_atomic(cfg.out_dir / "report.json", report)
    say(f"processed {res['frames_processed']}/{res['frames_sent']} frames; R@1 "
        f"{m['recall']['r1']:.1f}%  R@5 {m['recall'].get('r5', float('nan')):.1f}%  PR-AUC "
        f"{m['pr_auc']:.3f}; node top-1 = offline pipeline top-1 on {agree:.1f}% of frames")
    say("timings (s): " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in timings.items()))
    say(f"report: {cfg.out_dir / 'report.json'}, PR curve: {cfg.out_dir / 'pr_curve.png'}")
    return report
