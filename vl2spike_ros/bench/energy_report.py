"""``vl2spike energy`` report: the student vs dense teachers on real images (a benchmark).

Counting rules live in :mod:`vl2spike_ros.energy`; this module picks images, models and
teachers and writes the report, table and firing-rate plot.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from vl2spike_ros.energy import rate_projection_count, student_energy, teacher_energy
from vl2spike_ros.vpr.descriptors import IMAGE_NORM, stem_stages
from vl2spike_ros.vpr.place import PlaceDescriptor, load_place_descriptor

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- inputs
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
    """An open_clip image tower as a teacher: RGB ``[B,3,H,W]`` in [0,1] -> ``[B, D]``.

    The tower's own preprocessing (:func:`~vl2spike_ros.train.teachers.clip_preprocess`:
    bilinear resize to its input, CLIP normalisation), then the L2-normalised embedding.
    ``pretrained=None`` builds the real architecture with random weights (enough for MACs and
    speed; no pretrained weights are available offline).
    """

    def __init__(self, arch: str = "ViT-B-32", pretrained: str | None = None) -> None:
        super().__init__()
        import open_clip

        from vl2spike_ros.train.teachers import clip_preprocess

        model = open_clip.create_model(arch, pretrained=pretrained)
        self.visual = model.visual.eval()
        self.arch, self.pretrained = arch, pretrained
        self.preprocess = clip_preprocess(self.visual)
        self.size = self.preprocess.size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.visual(self.preprocess(images)), dim=-1)


# ----------------------------------------------------------------------------- full report
METHOD = ("Spikformer method at 45 nm: E = E_MAC*MACs(first real-valued layer + dense "
          "projection on pooled features) + E_AC*SOPs(all spike-driven layers; spike counts from "
          "residual sums weighted by count); BN folded; counted with spikingjelly op_counter "
          "(SynOpCounter, MACCounter) on real images. Teacher: dense MACs (MACCounter) x E_MAC.")
TARGET_RATIO = 0.10
PLACE_TEACHER = Path("bench/weights/vpr_teacher_cnn.safetensors")  # the students' VPR teacher
SPIKING_HW = ("spiking-hardware count: the whitening reads spike rates, W . mean_t(s_t) = "
              "mean_t(W . s_t), so it costs out_dim ACs per input spike (plus out_dim-sized "
              "scale/normalisation MACs) instead of in_dim x out_dim MACs")


# ----------------------------------------------------------------------------- rate projection
def place_projection_count(place: PlaceDescriptor, x: torch.Tensor) -> dict | None:
    """Count ``place``'s whitening both ways when it reads spike rates, else None.

    Only a Spikformer ``stem<n>`` descriptor feeds its whitening with plain spike rates (the
    other modes put a real-valued head in between). ``x``: preprocessed images ``[B, C, H, W]``.
    See :func:`~vl2spike_ros.energy.counting.rate_projection_count`.
    """
    n = stem_stages(place.settings.mode)
    if not (place.is_spiking and place.whitening is not None and n):
        return None
    place.eval()
    with torch.no_grad():
        spikes = place.backbone.forward_stem(x, n)
    return rate_projection_count(spikes, place.whitening.out_dim)


def spiking_hw_energy(dense_mj: float, proj: dict | None) -> float:
    """Return ``dense_mj`` with the rate projection re-counted as on spiking hardware."""
    if proj is None:
        return dense_mj
    return dense_mj - proj["energy_mj_dense"] + proj["energy_mj_spiking"]


def resolve_student(variant: str | None, weights: str | None, calib: torch.Tensor | None
                    ) -> tuple[nn.Module, dict]:
    """Return the student to measure and a description of its weights.

    ``weights`` given: load it (``variant``, if given, must match). Otherwise the packaged
    default VPR weights for ``spikformer_vpr`` when present, else random weights with BatchNorm
    calibrated on ``calib`` (a fresh eval-mode model would not fire).
    """
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


def _vpr_output(model: nn.Module, weights: str | None
                ) -> tuple[nn.Module, str, str | Callable, PlaceDescriptor | None]:
    """Return (model to measure, input normalisation, ``output`` for ``student_energy``, place).

    VPR weights (``metadata.vpr`` present): their place descriptor as used for matching
    (descriptor mode, whitening counted as MACs) on its own backbone; otherwise
    ``model.descriptor`` (and no place descriptor).
    """
    from vl2spike_ros import models

    if weights is None or "vpr" not in models.read_model_meta(weights)["metadata"]:
        return model, IMAGE_NORM, "descriptor", None
    place = load_place_descriptor(weights)

    def place_descriptor(x: torch.Tensor) -> torch.Tensor:
        return place(x)
    return place.backbone, place.settings.input_norm, place_descriptor, place


def load_real_images(in_chans: int, data_root: str | None, n: int) -> tuple[np.ndarray, str]:
    """``n`` real uint8 images: Nordland frames for grey variants, CIFAR-10 test for colour."""
    from vl2spike_ros.data.cifar import load_cifar10_tar, round_robin
    from vl2spike_ros.data.datasets import load_nordland_spread
    from vl2spike_ros.paths import data_root as _root

    root = _root() if data_root is None else Path(data_root)
    if in_chans == 1:
        return load_nordland_spread(root / "nordland", n), "nordland (summer+winter, even spread)"
    test = load_cifar10_tar(root / "cifar10.tar", "test")
    return round_robin(test, n), "cifar10 test (round-robin classes)"


def _proxy_teacher_energy(images: torch.Tensor) -> dict:
    try:
        from vl2spike_ros.train.teachers import PROXY_ASSET, ProxyTeacher
    except ImportError as exc:
        return {"skipped": f"ProxyTeacher not importable ({exc})"}
    try:
        trained = Path(PROXY_ASSET).is_file()
        teacher = ProxyTeacher.load() if trained else ProxyTeacher()
    except Exception as exc:  # optional part: report why it is missing, keep the rest
        log.warning("proxy teacher skipped: %s", exc)
        return {"skipped": f"ProxyTeacher could not be built ({type(exc).__name__}: {exc})"}
    out = teacher_energy(teacher.encode_image, images)
    out.update(name=f"ProxyTeacher image side ({teacher.teacher_id})", trained=trained)
    return out


def _place_teacher_energy(images: np.ndarray, path: Path | None) -> dict:
    """Dense energy of the place-CNN teacher's descriptor (conv map + its whitening)."""
    if path is None:
        return {"skipped": "not requested"}
    if not Path(path).is_file():
        return {"skipped": f"weights {path} not found (`vl2spike vpr train all` makes them)"}
    place = load_place_descriptor(path)
    out = teacher_energy(place, place.preprocess(images))
    out.update(name=f"place CNN teacher ({Path(path).name}, {place.settings.mode} + whitening)",
               weights=str(path))
    return out


def _add_place_teacher(report: dict, images: np.ndarray, path: Path | None) -> None:
    """Add the place-CNN teacher and the student's ratios to it, counted both ways."""
    pt = report["place_teacher"] = _place_teacher_energy(images, path)
    if "energy_mj" not in pt:
        return
    s = report["student"]
    report["ratio_vs_place_teacher"] = {"dense": s["energy_mj"] / pt["energy_mj"],
                                        "spiking_hw": s["energy_mj_spiking_hw"] / pt["energy_mj"]}
    report["meets_target_place_teacher_spiking_hw"] = (
        report["ratio_vs_place_teacher"]["spiking_hw"] <= TARGET_RATIO)


def energy_report(variant: str | None = None, weights: str | None = None,
                  data_root: str | None = None, num_images: int = 32,
                  clip_arch: str = "ViT-B-32", proxy: bool = True,
                  place_teacher: Path | None = PLACE_TEACHER) -> dict:
    """Student vs teacher energy per image on real images (see module docstring).

    The student is counted densely (``energy_mj``) and, for a place descriptor whose whitening
    reads spike rates, as on spiking hardware (``energy_mj_spiking_hw``); it is compared with
    CLIP, the proxy teacher and the place-CNN teacher it was distilled from (``place_teacher``).
    """
    from vl2spike_ros import models

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"student weights {weights} not found")
    in_chans = (models.read_model_meta(weights)["config"]["in_chans"] if weights else
                models.get_config(variant or "spikformer_vpr").in_chans)
    raw, source = load_real_images(in_chans, data_root, 2 * num_images)
    meas_raw, calib_raw = raw[0::2], raw[1::2]
    model, winfo = resolve_student(variant, weights, None if weights else
                                   student_input(calib_raw, models.get_config(
                                       variant or "spikformer_vpr")))
    model, norm, output, place = _vpr_output(model, winfo["weights"] if winfo["trained"]
                                             else None)
    x = student_input(meas_raw, model.config, norm)
    student = student_energy(model, x, output)
    student["rate_projection"] = place_projection_count(place, x) if place is not None else None
    student["energy_mj_spiking_hw"] = spiking_hw_energy(student["energy_mj"],
                                                        student["rate_projection"])
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
              "ratio_spiking_hw": student["energy_mj_spiking_hw"] / teacher["energy_mj"],
              "target_ratio": TARGET_RATIO, "method": METHOD, "spiking_hw_method": SPIKING_HW}
    report["meets_target"] = report["ratio"] <= TARGET_RATIO
    _add_place_teacher(report, meas_raw, place_teacher)
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
             f"{s['macs']:.3e}", f"{s['sops']:.3e}", f"{s['firing_rate']:.4f}")]
    proj = s.get("rate_projection")
    if proj:
        rows.append(("  same, spiking-hardware count of the whitening",
                     f"{s['energy_mj_spiking_hw']:.5f}",
                     f"{s['macs'] - proj['dense_macs'] + proj['macs']:.3e}",
                     f"{s['sops'] + proj['acs']:.3e}", "-"))
    rows.append((t["name"], f"{t['energy_mj']:.4f}", f"{t['macs']:.3e}", "-", "-"))
    for other in (report.get("proxy_teacher", {}), report.get("place_teacher", {})):
        if "energy_mj" in other:
            rows.append((other["name"], f"{other['energy_mj']:.4f}", f"{other['macs']:.3e}",
                         "-", "-"))
    p = report.get("proxy_teacher", {})
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"student/teacher energy ratio: {report['ratio']:.5f} "
                 f"({100 * report['ratio']:.3f} %; target <= {100 * TARGET_RATIO:.0f} %)")
    if "ratio_vs_place_teacher" in report:
        r = report["ratio_vs_place_teacher"]
        lines.append(f"student/place-CNN-teacher energy ratio: dense {100 * r['dense']:.2f} %, "
                     f"spiking-hardware count {100 * r['spiking_hw']:.2f} % "
                     f"(target <= {100 * TARGET_RATIO:.0f} %)")
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
