"""``vl2spike demo``: the main job end to end, offline, on the built-in default.

1. load the packaged default VPR weights;
2. build a place map from the Nordland *winter* held-out segment (last 40 % of places);
3. write the *summer* held-out segment into a ROS 2 bag (mcap);
4. start the real ``vpr_node`` (rclpy, loopback-only DDS) and replay the bag into it at camera
   rate, collecting the published ``vpr/candidates`` and ``/diagnostics``;
5. score the node's matches (Recall@1/5, PR curve), compare them with the offline pipeline on
   the same frames, and write ``report.json`` + ``pr_curve.png``.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vl2spike_ros.atomic import write_json_atomic
from vl2spike_ros.ros.bench_load import Prober, publish, start_node, wait_ready
from vl2spike_ros.ros.env import apply_loopback_env

log = logging.getLogger(__name__)
IMAGE_TOPIC = "/camera/image_raw"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (all have working defaults)."""

    out_dir: Path
    data_root: Path | None = None
    weights: Path | None = None
    rate_hz: float = 30.0
    train_frac: float = 0.6
    tolerance: int = 1
    top_k: int = 5
    limit: int | None = None
    storage: str = "mcap"
    startup_timeout_s: float = 120.0


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class CandidateRecorder(Prober):
    """:class:`Prober` that also keeps each candidates message (ids, scores) by stamp."""

    def __init__(self) -> None:
        self.candidates: dict[int, np.ndarray] = {}
        super().__init__(compressed=False)

    def _on_cands(self, msg: Any) -> None:
        from vl2spike_ros.ros.messages import unpack_candidates

        super()._on_cands(msg)
        stamp = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
        cands = unpack_candidates(msg).copy()
        with self.lock:
            self.candidates.setdefault(stamp, cands)


def prepare(cfg: DemoConfig) -> dict[str, Any]:
    """Weights, map of winter held-out places and summer held-out bag; returns paths + sizes."""
    from vl2spike_ros.io.bags import write_image_bag
    from vl2spike_ros.paths import data_root
    from vl2spike_ros.vpr.datasets import load_nordland
    from vl2spike_ros.vpr.pipeline import build_map, load_vpr_model

    root = Path(cfg.data_root) if cfg.data_root else data_root()
    nordland = root / "nordland"
    if not nordland.is_dir():
        raise FileNotFoundError(f"Nordland data not found at {nordland} (set VL2SPIKE_DATA_ROOT "
                                "or --data-root to the folder holding nordland/)")
    model, meta = load_vpr_model(cfg.weights)
    say(f"weights: {meta['variant']} (sha256 {meta['weights_hash']}), "
        f"{meta['descriptor_dim']}-d descriptors")
    winter, idx = load_nordland(nordland, "winter", "test", cfg.train_frac, grayscale=True)
    summer, _ = load_nordland(nordland, "summer", "test", cfg.train_frac, grayscale=False)
    n = len(idx) if cfg.limit is None else min(cfg.limit, len(idx))
    winter, summer, idx = winter[:n], summer[:n], idx[:n]
    metas = [{"frame": int(i), "source": f"nordland/winter/images-{int(i):05d}.png"} for i in idx]
    map_dir = build_map(model, meta, winter, metas).save(cfg.out_dir / "map_winter_heldout")
    say(f"map: {n} winter held-out places (frames {idx[0]}..{idx[-1]}) -> {map_dir}")
    bag = cfg.out_dir / "summer_heldout_bag"
    write_image_bag(bag, list(summer), topic=IMAGE_TOPIC, storage=cfg.storage,
                    encoding="rgb8", rate_hz=cfg.rate_hz, overwrite=True)
    say(f"bag: {n} summer held-out frames, rgb8 at {cfg.rate_hz:g} Hz ({cfg.storage}) -> {bag}")
    return {"weights": cfg.weights, "map_dir": map_dir, "bag": bag, "n": n,
            "first_frame": int(idx[0]), "model_meta": meta}


def _bag_messages(bag: Path) -> tuple[list[Any], np.ndarray]:
    """The bag's frames as rclpy Image messages, with their bag stamps (ns)."""
    from sensor_msgs.msg import Image

    from vl2spike_ros.io.bags import read_image_bag
    from vl2spike_ros.io.images import array_to_image_msg

    msgs, stamps = [], []
    for frame in read_image_bag(bag):
        msgs.append(array_to_image_msg(frame[1], "rgb8", msg_cls=Image))
        stamps.append(frame[0])
    return msgs, np.asarray(stamps, dtype=np.int64)


def _play(rec: CandidateRecorder, msgs: list[Any], bag_stamps: np.ndarray) -> tuple[list[int], float]:
    """Publish ``msgs`` with the bag's inter-frame timing; returns (publish stamps, wall s)."""
    from tqdm import tqdm

    sent, t0 = [], time.monotonic()
    offsets = (bag_stamps - bag_stamps[0]) / 1e9
    for msg, off in zip(tqdm(msgs, desc="[demo] replay", unit="frame"), offsets):
        time.sleep(max(0.0, t0 + off - time.monotonic()))
        sent.append(publish(rec, msg))
    return sent, time.monotonic() - t0


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
    return proc.returncode


def run_node(cfg: DemoConfig, weights: Path | None, map_dir: Path, bag: Path) -> dict[str, Any]:
    """Replay ``bag`` through a real ``vpr_node``; returns what was sent and received."""
    from vl2spike_ros.ros.fixtures import write_params_file

    params = {"weights": str(weights or ""), "map_dir": str(map_dir), "image_topic": "image",
              "top_k": cfg.top_k, "num_threads": 1, "match_threshold": 0.0,
              "diagnostics_period_s": 1.0}
    params_file = write_params_file(cfg.out_dir / "vpr_node_params.yaml", params)
    msgs, bag_stamps = _bag_messages(bag)
    ros_env = apply_loopback_env(log_dir=str(cfg.out_dir / "ros_log"))  # this process + node
    env = dict(os.environ)
    node_log = cfg.out_dir / "vpr_node.log"
    proc = start_node(params_file, env, node_log)
    rec = CandidateRecorder()
    try:
        say(f"vpr_node started (pid {proc.pid}, ROS_DOMAIN_ID {ros_env['ROS_DOMAIN_ID']}, "
            f"loopback-only DDS); waiting for it to answer ...")
        try:
            wait_ready(rec, msgs, proc, cfg.startup_timeout_s)
        except RuntimeError as exc:
            tail = node_log.read_text()[-2000:] if node_log.exists() else ""
            raise RuntimeError(f"{exc}; node log {node_log}:\n{tail}") from exc
        time.sleep(0.5)
        with rec.lock:
            rec.latencies.clear()
            rec.candidates.clear()
        sent, wall = _play(rec, msgs, bag_stamps)
        time.sleep(2.0)  # trailing matches and one more /diagnostics message
        with rec.lock:
            got = {"candidates": dict(rec.candidates), "latencies": dict(rec.latencies),
                   "diag": dict(rec.diag)}
    finally:
        rec.close()
        rc = _stop(proc)
    say(f"vpr_node stopped (exit code {rc}); log: {node_log}")
    return {"sent": sent, "wall_s": wall, "node_exit_code": rc, **got}


def score(cfg: DemoConfig, prep: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Recall/PR of the node's matches (query i shows map place i, +-tolerance frames)."""
    from vl2spike_ros.vpr.evaluation import correct_by_frames, evaluate_ranked

    sent, cands, lat = got["sent"], got["candidates"], got["latencies"]
    done = [(i, s) for i, s in enumerate(sent) if s in cands]
    if not done:
        raise RuntimeError("vpr_node published no matches for the replayed frames")
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
            "node_diagnostics": diag}


def _diag_float(diag: dict[str, str], key: str) -> float | None:
    try:
        return float(diag[key])
    except (KeyError, ValueError):
        return None


def offline_agreement(cfg: DemoConfig, prep: dict[str, Any], res: dict[str, Any]) -> float:
    """Percent of processed frames whose node top-1 equals the offline VPRPipeline's top-1."""
    from vl2spike_ros.io.bags import read_image_bag
    from vl2spike_ros.vpr.pipeline import VPRPipeline

    pipe = VPRPipeline(cfg.weights, prep["map_dir"], top_k=cfg.top_k, energy=False)
    frames = [f[1] for f in read_image_bag(prep["bag"])]
    offline = np.array([pipe.process(frames[i]).best_id for i in res["query_index"]])
    return float(100.0 * np.mean(offline == res["top1"]))


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns the report (also written to ``out_dir``)."""
    from vl2spike_ros.vpr.evaluation import plot_pr, strip_curves

    t0 = time.monotonic()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    say(f"output folder: {cfg.out_dir}")
    prep = prepare(cfg)
    got = run_node(cfg, cfg.weights, prep["map_dir"], prep["bag"])
    res = score(cfg, prep, got)
    agree = offline_agreement(cfg, prep, res)
    m = res["metrics"]
    plot_pr({"vpr_node (summer query vs winter map)": m["_curve"]}, cfg.out_dir / "pr_curve.png",
            title=f"Nordland held-out, tolerance +-{cfg.tolerance} frames")
    report = {
        "recall": m["recall"], "pr_auc": m["pr_auc"], "recall_at_100p": m["recall_at_100p"],
        **{k: res[k] for k in ("frames_sent", "frames_processed", "latency_ms_p50",
                               "latency_ms_p95", "latency_ms_max", "fps", "replay_wall_s",
                               "energy_mj_per_frame", "mean_firing_rate",
                               "node_inference_ms_p50", "node_diagnostics")},
        "top1_agreement_with_offline_pipeline_pct": agree,
        "places": prep["n"], "first_heldout_frame": prep["first_frame"],
        "model": prep["model_meta"], "config": {k: (str(v) if isinstance(v, Path) else v)
                                                for k, v in asdict(cfg).items()},
        "ground_truth": f"summer held-out frame i = winter place i, +-{cfg.tolerance} frames",
        "total_wall_s": time.monotonic() - t0,
    }
    write_json_atomic(cfg.out_dir / "report.json", strip_curves(report))
    say(f"processed {res['frames_processed']}/{res['frames_sent']} frames; R@1 "
        f"{m['recall']['r1']:.1f}%  R@5 {m['recall'].get('r5', float('nan')):.1f}%  PR-AUC "
        f"{m['pr_auc']:.3f}; node top-1 = offline pipeline top-1 on {agree:.1f}% of frames")
    say(f"report: {cfg.out_dir / 'report.json'}, PR curve: {cfg.out_dir / 'pr_curve.png'}")
    return report
