"""Frozen configuration dataclasses for distillation, loaded from YAML with ``--set`` overrides.

Every weight, temperature and schedule of the losses is a field here; each loss has ``enabled``.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vl2spike_ros.train.teachers import DEFAULT_TEMPLATES


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {' | '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    source: str = "cifar10"            # "cifar10" (tar) or "folder" (root/<class>/<image>)
    path: str | None = None            # tar / train folder; default <data root>/cifar10.tar
    test_path: str | None = None       # folder source: test folder (default: val split)
    train_limit: int = 0               # class-balanced subset of train (0 = all)
    # seed of that subset: None = the run's seed (each seed its own subset); an int = one fixed
    # subset for every seed (paired comparisons)
    subset_seed: int | None = None
    val_fraction: float = 0.1          # carved from train (choices use val, never test)
    test_limit: int = 0                # class-balanced subset of test for evaluation (0 = all)
    augment: bool = True               # random crop (pad) + horizontal flip
    pad: int = 4
    num_workers: int = 0


@dataclass(frozen=True)
class TeacherConfig:
    kind: str = "proxy"                # "proxy" | "openclip" | "none"
    name: str = ""                     # open_clip model name
    pretrained: str | None = None      # open_clip tag or checkpoint file
    model_config: str | None = None    # extra open_clip model config JSON (custom architectures)
    path: str | None = None            # proxy weights (default: packaged asset)
    templates: tuple[str, ...] = DEFAULT_TEMPLATES   # SPL prompt ensemble
    # classic KD prompts; empty = the same prompt ensemble as SPL (``templates``)
    kd_templates: tuple[str, ...] = ("a photo of a {}.",)
    logit_scale: float | None = None   # zero-shot logits = scale * cosine (None: teacher's own)
    cache_dir: str | None = None       # feature cache folder (None: no disk cache)
    # online: run the teacher on each augmented batch (else cached features of the
    # un-augmented images, see features.py)
    online: bool = False


@dataclass(frozen=True)
class KDConfig:
    enabled: bool = False
    weight: float = 1.0
    temperature: float = 4.0


@dataclass(frozen=True)
class SVSAlignConfig:
    enabled: bool = False
    cos_weight: float = 1.0            # direct term: 1 - cos(proj(student), teacher)
    rel_weight: float = 1.0            # relational term: KL of batch similarity structure
    rel_temperature: float = 0.1
    projector: str = "mlp"             # "mlp" | "linear" | "identity"
    proj_hidden: int = 256


@dataclass(frozen=True)
class SVSTemporalConfig:
    enabled: bool = False
    weight: float = 0.5                # final weight after the ramp
    warmup_epochs: float = 1.0         # weight 0 before this (warm start)
    ramp_epochs: float = 1.0           # then linear ramp to ``weight``
    target: str = "mean"               # each step vs "mean" over T or the "final" step
    feature_weight: float = 1.0        # per-step pooled features
    membrane_weight: float = 1.0       # membrane potentials (v_seq)
    rate_weight: float = 1.0           # per-step spike rates
    # "layer": one rate per LIF layer per step ([T]); "sample": per image ([T,B])
    rate_granularity: str = "layer"

    def __post_init__(self) -> None:
        _check_choice("loss.svs_temporal.rate_granularity", self.rate_granularity,
                      ("layer", "sample"))


@dataclass(frozen=True)
class SPLConfig:
    enabled: bool = False
    proto_weight: float = 1.0          # 1 - cos(proj(prototype_c), text_c)
    proto_nce_weight: float = 0.5      # prototype-vs-all-class-texts InfoNCE
    proto_temperature: float = 0.1
    proto_momentum: float = 0.9        # EMA of per-class pooled features
    logit_weight: float = 1.0          # KL(student logits || teacher zero-shot logits)
    temperature: float = 4.0
    projector: str = "mlp"
    proj_hidden: int = 256


@dataclass(frozen=True)
class LossConfig:
    ce_weight: float = 1.0
    label_smoothing: float = 0.0
    kd: KDConfig = field(default_factory=KDConfig)
    svs_align: SVSAlignConfig = field(default_factory=SVSAlignConfig)
    svs_temporal: SVSTemporalConfig = field(default_factory=SVSTemporalConfig)
    spl: SPLConfig = field(default_factory=SPLConfig)


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0             # max gradient norm (0 = no clipping)
    # "global": clip the summed gradient; "per_term": clip each loss group's gradient (ce, kd,
    # svs_align, svs_temporal, spl) to grad_clip before summing (one extra backward per group)
    clip_mode: str = "global"
    grad_norm_every: int = 0           # log |d term / d student| per term every N steps (0 = off)

    def __post_init__(self) -> None:
        _check_choice("optim.clip_mode", self.clip_mode, ("global", "per_term"))
    max_steps: int = 0                 # stop after N optimizer steps (0 = full schedule)


@dataclass(frozen=True)
class DistillConfig:
    model: str = "spikformer_cifar"
    model_overrides: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"               # "auto" | "cpu" | "cuda" | "cuda:N"
    bf16: bool = True                  # bf16 autocast on CUDA (ignored on CPU)
    threads: int = 0                   # torch CPU threads (0 = leave as is)
    eval_batch_size: int = 128
    eval_val: bool = True              # also report top-1 on the validation split
    bn_calibrate_batches: int = 0      # re-estimate BN statistics on N train batches before eval
    tensorboard: bool = True
    progress: bool = True


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or 'root'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(f'{where}{k}' for k in unknown)}; "
                         f"known in {where or 'root'}: {sorted(fields)}")
    kwargs = {}
    for k, v in data.items():
        t = _optional_dataclass(hints[k]) if isinstance(v, dict) else hints[k]
        if dataclasses.is_dataclass(t):
            kwargs[k] = _build(t, v, f"{where}{k}.")
        elif typing.get_origin(t) is tuple and isinstance(v, (list, tuple)):
            kwargs[k] = tuple(v)
        elif t is float and isinstance(v, int) and not isinstance(v, bool):
            kwargs[k] = float(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def _optional_dataclass(t: Any) -> Any:
    """``X | None`` with X a dataclass -> X (a mapping builds it); anything else unchanged."""
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(t) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return t


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {p} is not a section")
    node[parts[-1]] = value


def apply_overrides(tree: dict, overrides: dict[str, Any] | None) -> dict:
    """Deep copy of the nested ``tree`` with dotted ``overrides`` set (``{"a.b": 1}``)."""
    out = copy.deepcopy(tree or {})
    for k, v in (overrides or {}).items():
        _set_dotted(out, k, v)
    return out


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values parsed as YAML)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = yaml.safe_load(v)
        except yaml.YAMLError as exc:
            raise ValueError(f"--set {item!r}: cannot parse the value as YAML ({exc})") from exc
    return out


def config_from_dict(data: dict[str, Any],
                     overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Build a :class:`DistillConfig` from a nested dict plus dotted ``overrides``."""
    tree = _deep_merge({}, data or {})
    for k, v in (overrides or {}).items():
        _set_dotted(tree, k, v)
    return _build(DistillConfig, tree, "")


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        merge = isinstance(v, dict) and k != "model_overrides"
        out[k] = _deep_merge(out.get(k, {}), v) if merge else v
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> DistillConfig:
    """Read a YAML config file (see ``config/distill/``) and apply dotted overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"distill config not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    return config_from_dict(data, overrides)


def config_to_dict(cfg: DistillConfig) -> dict[str, Any]:
    """JSON/YAML-friendly nested dict of ``cfg``."""
    def conv(x):
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x
    return conv(dataclasses.asdict(cfg))
