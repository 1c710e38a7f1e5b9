"""``vl2spike energy`` report: the student vs dense teachers on real images (a benchmark).

Counting rules live in :mod:`vl2spike_ros.energy`; this module picks images, models and
teachers and writes the report, table and firing-rate plot.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from vl2spike_ros.energy import student_energy, teacher_energy

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- real images
def load_nordland_frames(root, n: int) -> np.ndarray:
    """``n`` frames evenly spread over the summer and winter traversals: uint8 ``[n, 32, 64]``."""
    import cv2

    from vl2spike_ros.paths import nordland_root

    base = nordland_root(root)
    frames = []
    seasons = ["summer", "winter"]
    for k, season in enumerate(seasons):
        files = sorted((base / season).glob("*.png"))
        if not files:
            raise FileNotFoundError(f"no Nordland frames in {base / season}")
        m = n // len(seasons) + (1 if k < n % len(seasons) else 0)
        idx = np.linspace(0, len(files) - 1, m).round().astype(int)
        for i in idx:
            img = cv2.imread(str(files[i]), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise ValueError(f"cannot decode {files[i]}")
            frames.append(img)
    return np.stack(frames)


def load_cifar_test_images(tar_path, n: int) -> np.ndarray:
    """First ``n`` CIFAR-10 test images (round-robin over classes): uint8 RGB ``[n, 32, 32, 3]``."""
    import tarfile

    import cv2

    from vl2spike_ros.paths import cifar10_tar

    by_class: dict[str, list] = {}
    with tarfile.open(cifar10_tar(tar_path)) as tf:
        for member in tf:
            parts = member.name.strip("./").split("/")
            if len(parts) != 3 or parts[0] != "test" or not member.isfile():
                continue
            lst = by_class.setdefault(parts[1], [])
            if len(lst) < n:
                buf = np.frombuffer(tf.extractfile(member).read(), np.uint8)
                lst.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
    if not by_class:
        raise ValueError(f"no test/<class>/*.jpg members in {tar_path}")
    out, i = [], 0
    while len(out) < n and any(by_class.values()):
        lst = list(by_class.values())[i % len(by_class)]
        if lst:
            out.append(lst.pop(0))
        i += 1
    return np.stack(out)


def student_input(images: np.ndarray, cfg, norm: str = "image") -> torch.Tensor:
    """uint8 images -> the student's float input ``[N, C, H, W]``.

    Grey (VPR) variants use the VPR pipeline's preprocessing (resize + ``norm`` standardisation,
    see :mod:`vl2spike_ros.vpr.descriptors`); colour variants get RGB in [0, 1] as in
    distillation.
    """
    if cfg.in_chans == 1:
        from vl2spike_ros.vpr.descriptors import preprocess
        return preprocess(images, tuple(cfg.img_size), 1, norm)
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None].repeat(1, 3, 1, 1)
    return torch.nn.functional.interpolate(x, size=tuple(cfg.img_size), mode="bilinear",
                                           align_corners=False)


def teacher_input(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N,H,W]`` / ``[N,H,W,3]`` -> RGB float ``[N,3,H,W]`` in [0, 1] (grey repeated)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x[:, None].repeat(1, 3, 1, 1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


class ClipImageTower(nn.Module):
    """open_clip image tower as a teacher: RGB ``[B,3,H,W]`` in [0,1] -> bilinear resize to the
    tower's input (224) -> CLIP normalisation -> L2-normalised embedding ``[B, D]``.

    ``pretrained=None`` builds the real architecture with random weights (enough for MACs and
    speed; no pretrained weights are available offline)."""

    def __init__(self, arch: str = "ViT-B-32", pretrained: str | None = None) -> None:
        super().__init__()
        import open_clip

        model = open_clip.create_model(arch, pretrained=pretrained)
        self.visual = model.visual.eval()
        self.arch, self.pretrained = arch, pretrained
        size = getattr(self.visual, "image_size", 224)
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        mean = getattr(self.visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(self.visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.interpolate(images, size=self.size, mode="bilinear",
                                            align_corners=False)
        return torch.nn.functional.normalize(self.visual((x - self.mean) / self.std), dim=-1)


# ----------------------------------------------------------------------------- full report
METHOD = ("Spikformer method at 45 nm: E = E_MAC*MACs(first real-valued layer + dense "
          "projection on pooled features) + E_AC*SOPs(all spike-driven layers; spike counts from "
          "residual sums weighted by count); BN folded; counted with spikingjelly op_counter "
          "(SynOpCounter, MACCounter) on real images. Teacher: dense MACs (MACCounter) x E_MAC.")
TARGET_RATIO = 0.10


def resolve_student(variant: str | None, weights: str | None, calib: torch.Tensor | None
                    ) -> tuple[nn.Module, dict]:
    """The student to measure and a description of its weights.

    ``weights`` given: load it (``variant``, if given, must match). Otherwise the packaged
    default VPR weights for ``spikformer_vpr`` when present, else random weights with BatchNorm
    calibrated on ``calib`` (a fresh eval-mode model would not fire)."""
    from vl2spike_ros import models

    if weights is None and (variant or "spikformer_vpr") == "spikformer_vpr":
        if models.default_vpr_weights().is_file():
            weights = str(models.default_vpr_weights())
    if weights is not None:
        model = models.load_model(weights)
        if variant is not None and model.config.name != variant:
            raise ValueError(f"{weights} holds variant {model.config.name!r}, not {variant!r}")
        return model, {"weights": str(weights), "weights_hash": models.weights_hash(weights),
                       "trained": True}
    model = models.create_model(variant or "spikformer_vpr")
    if calib is None:
        raise ValueError("random weights need calibration images for BatchNorm")
    n = models.calibrate_bn(model, torch.split(calib, 16), max_batches=16)
    model.eval()
    return model, {"weights": f"random (BatchNorm calibrated on {len(calib)} real images, "
                              f"{n} batches; no trained weights found)",
                   "weights_hash": None, "trained": False}


def _vpr_output(model: nn.Module, weights: str | None) -> str | Callable:
    """VPR weights (``metadata.vpr`` present): their place descriptor as used for matching
    (spatial head, whitening); otherwise ``model.descriptor``."""
    from vl2spike_ros import models

    weights = weights or (str(models.default_vpr_weights())
                          if models.default_vpr_weights().is_file() else None)
    if weights is None or "vpr" not in models.read_model_meta(weights).get("metadata", {}):
        return "descriptor"
    from vl2spike_ros.vpr.descriptors import check_mode, place_descriptor
    from vl2spike_ros.vpr.pipeline import attach_whitening

    vpr = models.read_model_meta(weights)["metadata"]["vpr"]
    model.vpr_descriptor = check_mode(vpr.get("descriptor", "pooled"))
    attach_whitening(model, weights)

    def place_descriptor_(x: torch.Tensor) -> torch.Tensor:
        return place_descriptor(model, x)
    place_descriptor_.__name__ = "place_descriptor"
    return place_descriptor_


def load_real_images(in_chans: int, data_root: str | None, n: int) -> tuple[np.ndarray, str]:
    """``n`` real uint8 images: Nordland frames for grey variants, CIFAR-10 test for colour."""
    from vl2spike_ros.paths import data_root as _root

    root = _root() if data_root is None else __import__("pathlib").Path(data_root)
    if in_chans == 1:
        return load_nordland_frames(root / "nordland", n), "nordland (summer+winter, even spread)"
    return load_cifar_test_images(root / "cifar10.tar", n), "cifar10 test (round-robin classes)"


def _proxy_teacher_energy(images: torch.Tensor) -> dict:
    try:
        from vl2spike_ros.train.teachers import PROXY_ASSET, ProxyTeacher
    except ImportError as exc:
        return {"skipped": f"ProxyTeacher not importable ({exc})"}
    try:
        from pathlib import Path
        trained = Path(PROXY_ASSET).is_file()
        teacher = ProxyTeacher.load() if trained else ProxyTeacher()
    except Exception as exc:  # optional part: report why it is missing, keep the rest
        log.warning("proxy teacher skipped: %s", exc)
        return {"skipped": f"ProxyTeacher could not be built ({type(exc).__name__}: {exc})"}
    out = teacher_energy(teacher.encode_image, images)
    out.update(name=f"ProxyTeacher image side ({teacher.teacher_id})", trained=trained)
    return out


def energy_report(variant: str | None = None, weights: str | None = None,
                  data_root: str | None = None, num_images: int = 32,
                  clip_arch: str = "ViT-B-32", proxy: bool = True) -> dict:
    """Student vs teacher energy per image on real images (see module docstring)."""
    from vl2spike_ros import models

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if weights is not None and not __import__("pathlib").Path(weights).is_file():
        raise FileNotFoundError(f"student weights {weights} not found")
    in_chans = (models.read_model_meta(weights)["config"]["in_chans"] if weights else
                models.get_config(variant or "spikformer_vpr").in_chans)
    raw, source = load_real_images(in_chans, data_root, 2 * num_images)
    meas_raw, calib_raw = raw[0::2], raw[1::2]
    model, winfo = resolve_student(variant, weights, None if weights else
                                   student_input(calib_raw, models.get_config(
                                       variant or "spikformer_vpr")))
    norm = (models.read_model_meta(weights).get("metadata", {}).get("vpr", {})
            .get("input_norm", "image") if weights else "image")
    x = student_input(meas_raw, model.config, norm)
    student = student_energy(model, x, _vpr_output(model, weights))
    timgs = teacher_input(meas_raw)
    clip = ClipImageTower(clip_arch)
    teacher = teacher_energy(clip, timgs)
    teacher.update(name=f"open_clip {clip_arch} image tower",
                   note="architecture only (pretrained=None, random weights): MACs do not "
                        "depend on weight values",
                   input=f"{tuple(timgs.shape[-2:])} upsampled to {clip.size}")
    report = {"variant": model.config.name, "config": model.config.to_dict(), **winfo,
              "data": {"source": source, "num_images": int(len(meas_raw))},
              "student": student, "teacher": teacher,
              "ratio": student["energy_mj"] / teacher["energy_mj"],
              "target_ratio": TARGET_RATIO, "method": METHOD}
    report["meets_target"] = report["ratio"] <= TARGET_RATIO
    if proxy:
        report["proxy_teacher"] = _proxy_teacher_energy(timgs)
        if "energy_mj" in report["proxy_teacher"]:
            report["ratio_vs_proxy"] = student["energy_mj"] / report["proxy_teacher"]["energy_mj"]
    return report


def format_table(report: dict) -> str:
    """Human-readable summary of :func:`energy_report`."""
    s, t = report["student"], report["teacher"]
    rows = [("model", "energy/img [mJ]", "MACs/img", "SOPs/img", "firing rate"),
            (f"{report['variant']} (T={s['T']})", f"{s['energy_mj']:.5f}",
             f"{s['macs']:.3e}", f"{s['sops']:.3e}", f"{s['firing_rate']:.4f}"),
            (t["name"], f"{t['energy_mj']:.4f}", f"{t['macs']:.3e}", "-", "-")]
    p = report.get("proxy_teacher", {})
    if "energy_mj" in p:
        rows.append((p["name"], f"{p['energy_mj']:.4f}", f"{p['macs']:.3e}", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"student/teacher energy ratio: {report['ratio']:.5f} "
                 f"({100 * report['ratio']:.3f} %; target <= {100 * TARGET_RATIO:.0f} %)")
    if "ratio_vs_proxy" in report:
        lines.append(f"student/proxy-teacher energy ratio: {report['ratio_vs_proxy']:.5f}")
    elif p:
        lines.append(f"proxy teacher: {p.get('skipped')}")
    lines.append(f"weights: {report['weights']}")
    lines.append(f"data: {report['data']['num_images']} images from {report['data']['source']}")
    return "\n".join(lines)


def plot_firing_rates(report: dict, path) -> None:
    """Bar plot (PNG) of the student's per-layer firing rates, written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vl2spike_ros.atomic import atomic_path

    rates = report["student"]["per_layer_firing_rate"]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rates) + 1.5))
    names = list(rates)
    ax.barh(range(len(names)), [rates[n] for n in names], color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("firing rate (spikes / neuron / time step)")
    s = report["student"]
    ax.set_title(f"{report['variant']}: mean rate {s['firing_rate']:.3f}, "
                 f"{s['energy_mj']:.4f} mJ/img = {100 * report['ratio']:.3f} % of "
                 f"{report['teacher']['name']}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- command
def add_parser(subparsers, name: str = "energy"):
    """Add the energy report's parser as ``name``; returns it."""
    p = subparsers.add_parser(
        name, help="energy per image of the spiking student vs the CLIP teacher (45 nm)",
        description="Measure per-layer firing rates, SOPs and first-layer MACs of a student on "
                    "real images and compare its energy with CLIP ViT-B/32 (dense MACs) at the "
                    "same input.")
    p.add_argument("--variant", default=None,
                   help="student variant (default: spikformer_vpr, or the one in --weights)")
    p.add_argument("--weights", default=None,
                   help="trained student .safetensors (default: packaged VPR weights if present, "
                        "else random weights with BatchNorm calibrated on real images)")
    p.add_argument("--data-root", default=None, help="folder with nordland/ and cifar10.tar")
    p.add_argument("--num-images", type=int, default=32, help="images to measure on")
    p.add_argument("--clip-arch", default="ViT-B-32", help="open_clip teacher architecture")
    p.add_argument("--no-proxy", action="store_true", help="skip the proxy teacher")
    p.add_argument("--json", type=Path, default=None, help="write all numbers to this JSON")
    p.add_argument("--plot", type=Path, default=None,
                   help="per-layer firing-rate PNG (default: next to --json)")
    p.set_defaults(func=run)
    return p


def register(subparsers) -> None:
    """``vl2spike bench energy`` (same as ``vl2spike energy``)."""
    add_parser(subparsers)


def run(ns: argparse.Namespace) -> int:
    """Measure, print the table, write JSON and plot."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from vl2spike_ros.atomic import write_json_atomic

    torch.manual_seed(0)
    report = energy_report(variant=ns.variant, weights=ns.weights, data_root=ns.data_root,
                           num_images=ns.num_images, clip_arch=ns.clip_arch,
                           proxy=not ns.no_proxy)
    plot = ns.plot
    if plot is None and ns.json is not None:
        plot = ns.json.with_name(ns.json.stem + "_firing_rates.png")
    if plot is not None:
        plot_firing_rates(report, plot)
        report["plot"] = str(plot)
    print(format_table(report))
    if ns.json is not None:
        write_json_atomic(ns.json, report)
        print(f"wrote {ns.json}" + (f" and {plot}" if plot else ""))
    elif plot is not None:
        print(f"wrote {plot}")
    return 0
