"""Energy of the spiking student vs. dense teachers (45 nm, Horowitz 2014 costs).

Standard Spikformer accounting: the first layer sees real-valued pixels and is counted as MACs;
every later weight layer is driven by spikes and counted as synaptic operations (SOPs = spikes x
fan-out, i.e. ``T x firing rate x FLOPs``). ``E = E_MAC * MACs + E_AC * SOPs`` with
``E_MAC = 4.6 pJ`` and ``E_AC = 0.9 pJ`` (spikingjelly ``SimpleEnergyCostConfig.fp32()``).

Counting uses spikingjelly's ``op_counter`` (``SynOpCounter``, ``MACCounter`` under a
``DispatchCounterMode``) on a real forward pass, with one extension: Spikformer's residual
``x + f(x)`` sums spikes, so some weight layers receive integer spike *counts* (0, 1, 2, ...)
rather than 0/1 spikes. Those are counted as SOPs weighted by the count (each spike of a
multi-spike input accumulates the weight once) instead of as MACs. BatchNorm is treated as
folded into the preceding weights (not counted), as usual for this method. Dense teachers are
counted with ``MACCounter`` (all matmuls/convs incl. attention), energy = ``E_MAC * MACs``.
All reported numbers are per image.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import monitor, neuron
from spikingjelly.activation_based.op_counter import (
    DispatchCounterMode,
    MACCounter,
    SimpleEnergyCostConfig,
    SynOpCounter,
)

log = logging.getLogger(__name__)
aten = torch.ops.aten

__all__ = ["E_MAC_PJ", "E_AC_PJ", "student_energy", "teacher_energy", "spike_count_rules",
           "energy_mj"]

_COST = SimpleEnergyCostConfig.fp32()
E_MAC_PJ: float = float(_COST.e_mac_pj)
E_AC_PJ: float = float(_COST.e_ac_pj)
_BN_TYPES = [nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d]
_SDPA_OPS = [getattr(aten, n).default for n in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention") if hasattr(aten, n)]


def energy_mj(macs: float, sops: float) -> float:
    """``E_MAC * macs + E_AC * sops`` in millijoules."""
    return (E_MAC_PJ * macs + E_AC_PJ * sops) * 1e-9


# ----------------------------------------------------------------------------- counting rules
def _kind(x: Any) -> str:
    """'binary' (0/1 spikes), 'count' (non-negative integers: summed spikes) or 'real'."""
    if not torch.is_tensor(x):
        return "none"
    if x.dtype == torch.bool:
        return "binary"
    if not x.is_floating_point():
        return "real"
    if bool((x.eq(0) | x.eq(1)).all()):
        return "binary"
    if bool(((x >= 0) & x.eq(torch.round(x))).all()):
        return "count"
    return "real"


def _sum(x: torch.Tensor) -> int:
    return int(x.sum(dtype=torch.float64).item())


def _conv_count_sops(args: tuple) -> int:
    """SOPs of a convolution driven by a spike-count tensor: sum over inputs of count x fan-out."""
    x, w, _, stride, padding, dilation, _, _, groups = args[:9]
    with torch.no_grad():
        ones = torch.ones((groups, w.shape[1], *w.shape[2:]), dtype=torch.float64, device=x.device)
        occ = aten.convolution.default(x.double(), ones, None, stride, padding, dilation, False,
                                       [0] * len(stride), groups)
    return _sum(occ) * (int(w.shape[0]) // groups)


def _mm_count_sops(x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> int | None:
    """(Batched) matmul ``x @ y`` where a spike-count operand meets real weights (count x
    fan-out) or another count tensor; None = spikingjelly's own rule applies (binary spikes,
    including binary x count, where the binary operand is the spike train)."""
    kx, ky = _kind(x), _kind(y)
    if {kx, ky} == {"count"}:
        return _sum(out)
    if kx == "count" and ky == "real":
        return _sum(x) * int(y.shape[-1])
    if ky == "count" and kx == "real":
        return _sum(y) * int(x.shape[-2])
    return None


def spike_count_rules() -> tuple[dict, dict]:
    """Extra rules ``(synop_rules, mac_rules)`` extending spikingjelly's counters to integer
    spike-count inputs (counted as SOPs, not MACs). Binary/real cases use spikingjelly's rules."""
    base_syn, base_mac = SynOpCounter().rules, MACCounter().rules
    syn: dict[Any, Callable] = {}
    mac: dict[Any, Callable] = {}
    operands = {aten.mm.default: (0, 1), aten.bmm.default: (0, 1),
                aten.addmm.default: (1, 2), aten.baddbmm.default: (1, 2)}

    def mm_rules(op, i, j):
        def s(args, kwargs, out):
            n = _mm_count_sops(args[i], args[j], out)
            return base_syn[op](args, kwargs, out) if n is None else n

        def m(args, kwargs, out):
            if "count" in (_kind(args[i]), _kind(args[j])):
                return 0
            return base_mac[op](args, kwargs, out)
        return s, m

    for op, (i, j) in operands.items():
        syn[op], mac[op] = mm_rules(op, i, j)
    conv = aten.convolution.default

    def conv_syn(args, kwargs, out):
        if _kind(args[0]) == "count" and not args[6]:
            return _conv_count_sops(args)
        return base_syn[conv](args, kwargs, out)

    def conv_mac(args, kwargs, out):
        return 0 if _kind(args[0]) == "count" else base_mac[conv](args, kwargs, out)

    syn[conv], mac[conv] = conv_syn, conv_mac
    for op in _SDPA_OPS:
        mac[op] = _sdpa_macs
    return syn, mac


def _sdpa_macs(args, kwargs, out) -> int:
    """Fused attention ``softmax(q k^T) v``: q [B,H,L,E], k [B,H,S,E], v [B,H,S,Ev]."""
    q, k, v = args[:3]
    b_h = int(torch.tensor(q.shape[:-2]).prod())
    return b_h * int(q.shape[-2]) * int(k.shape[-2]) * (int(q.shape[-1]) + int(v.shape[-1]))


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's fused inference path hides its matmuls from the dispatcher."""
    mha = torch.backends.mha
    old = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(old)


def _top_scopes(counter, exclude: tuple[str, ...] = ("Global",)) -> dict[str, int]:
    """Counts per top-level module scope (spikingjelly names scopes by module class/path)."""
    out = {}
    for scope, recs in counter.get_counts().items():
        if scope not in exclude and scope.count(".") <= 1:
            out[scope] = int(sum(recs.values()))
    return out


# ----------------------------------------------------------------------------- student
@torch.no_grad()
def student_energy(model: nn.Module, images: torch.Tensor,
                   output: str | Callable[[torch.Tensor], Any] = "descriptor") -> dict:
    """Per-image energy of a SpikformerStudent on ``images [B,C,H,W]`` (eval mode).

    ``output``: ``"descriptor"`` (``model.descriptor``: features + pooled projection),
    ``"logits"``, or a callable ``images -> output`` that runs the model (e.g. the VPR place
    descriptor with its spatial head and whitening, which then count as MACs).
    Returns ``energy_mj, sops, macs_first_layer, macs_other, macs, firing_rate,
    per_layer_firing_rate, sops_by_scope, T, batch, e_mac_pj, e_ac_pj``.
    """
    if not callable(output) and output not in ("descriptor", "logits"):
        raise ValueError(f"output must be 'descriptor', 'logits' or a callable, got {output!r}")
    was_training = model.training
    model.eval()
    first_conv = model.stem.stages[0].conv_bn.block[0]
    syn_rules, mac_rules = spike_count_rules()
    syn = SynOpCounter(extra_rules=syn_rules, extra_ignore_modules=_BN_TYPES)
    mac = MACCounter(extra_rules=mac_rules, extra_ignore_modules=_BN_TYPES)
    mac_first = MACCounter(extra_rules=mac_rules, extra_ignore_modules=_BN_TYPES)
    spikes = monitor.OutputMonitor(model, neuron.BaseNode,
                                   lambda s: (float(s.sum()), int(s.numel())))
    try:
        with DispatchCounterMode([syn, mac]):
            fn = output if callable(output) else (
                model.descriptor if output == "descriptor" else model.forward)
            fn(images)
        with DispatchCounterMode([mac_first]):  # the first layer alone, on the same input
            first_conv(images)
        rates = {}
        for name in spikes.monitored_layers:
            recs = spikes[name]
            rates[name] = sum(r[0] for r in recs) / max(1, sum(r[1] for r in recs))
        total_spikes = sum(r[0] for r in spikes.records)
        total_neurons = sum(r[1] for r in spikes.records)
    finally:
        spikes.close()
        model.train(was_training)
    b = int(images.shape[0] if images.ndim == 4 else images.shape[1])
    macs_all = mac.get_total() / b
    macs_first = mac_first.get_total() / b
    sops = syn.get_total() / b
    return {
        "energy_mj": energy_mj(macs_all, sops),
        "sops": sops,
        "macs_first_layer": macs_first,
        "macs_other": macs_all - macs_first,
        "macs": macs_all,
        "firing_rate": total_spikes / max(1, total_neurons),
        "per_layer_firing_rate": rates,
        "sops_by_scope": {k: v / b for k, v in _top_scopes(syn).items()},
        "T": int(model.config.T), "batch": b,
        "output": output if isinstance(output, str) else getattr(output, "__name__", "callable"),
        "e_mac_pj": E_MAC_PJ, "e_ac_pj": E_AC_PJ,
    }


# ----------------------------------------------------------------------------- teacher
@torch.no_grad()
def teacher_energy(module: nn.Module | Callable[[torch.Tensor], Any],
                   images: torch.Tensor) -> dict:
    """Per-image dense energy of a teacher (ANN) on ``images`` (all MACs: convs, matmuls,
    attention). ``module`` is an ``nn.Module`` or callable taking the image batch."""
    _, mac_rules = spike_count_rules()
    mac = MACCounter(extra_rules=mac_rules)
    was = getattr(module, "training", None)
    if isinstance(module, nn.Module):
        module.eval()
    try:
        with _mha_fastpath_off(), DispatchCounterMode([mac]) as mode:
            module(images)
        skipped = mode.get_unsupported(mac)
    finally:
        if isinstance(module, nn.Module) and was:
            module.train()
    fused = [k for k in skipped if "attention" in k or "_native_multi_head" in k]
    if fused:
        raise RuntimeError(f"teacher uses fused ops the MAC counter cannot see: {fused}")
    b = int(images.shape[0])
    macs = mac.get_total() / b
    return {"energy_mj": energy_mj(macs, 0.0), "macs": macs, "batch": b,
            "macs_by_scope": {k: v / b for k, v in _top_scopes(mac).items()},
            "e_mac_pj": E_MAC_PJ}


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
        from vl2spike_ros.distill.teachers import PROXY_ASSET, ProxyTeacher
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
