"""VPR training recipes: frozen dataclasses read from YAML (``config/vpr/*.yaml``) with ``--set``.

One recipe describes one trained place model: the network (``model``), where its frames come
from (``data``: :class:`~vl2spike_ros.data.routes.RouteOptions` + ``paths``), an optional frozen
teacher (``teacher``), the optimiser (``optim``:
:class:`~vl2spike_ros.train.vpr_train.TrainConfig`), the loss weights (``loss``:
:class:`~vl2spike_ros.train.vpr_losses.SVSWeights`) and the fitted post-processing
(``whitening``). ``vl2spike vpr train --config`` runs any recipe
(:mod:`vl2spike_ros.train.route_train`); the Nordland weight factory
(:mod:`vl2spike_ros.train.vpr_all`) reads its four recipes (teacher, direct, control, distilled)
from the same files.

String fields may name ``{weights_dir}``, ``{teacher}``, ``{direct}`` and ``{default}``: the
weights folder (default ``bench/weights``), the teacher CNN and the direct student in it, and the
packaged default VPR weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vl2spike_ros.data.routes import RouteOptions
from vl2spike_ros.paths import PACKAGE_DIR
from vl2spike_ros.train.config import _build, _deep_merge, _set_dotted
from vl2spike_ros.train.vpr_losses import SVSWeights
from vl2spike_ros.train.vpr_train import TrainConfig
from vl2spike_ros.vpr.descriptors import SPATIAL


def _config_dir() -> Path:
    """Return ``config/vpr`` of the source checkout, else of the installed share folder."""
    cands = [PACKAGE_DIR.parent / "config" / "vpr"]
    cands += [p / "share" / "vl2spike_ros" / "config" / "vpr" for p in PACKAGE_DIR.parents[:4]]
    return next((c for c in cands if c.is_dir()), cands[0])


VPR_CONFIG_DIR = _config_dir()
SPIKFORMER_MODEL, CNN_MODEL = "spikformer", "cnn"
WHITENING_KINDS = ("auto", "learned", "pca", "none")


@dataclass(frozen=True)
class ModelSection:
    """The network trained and the place descriptor its weights are saved with."""

    kind: str = SPIKFORMER_MODEL       # "spikformer" (student) | "cnn" (ANN, InfoNCE only)
    variant: str = "spikformer_vpr"    # registered Spikformer variant
    overrides: dict = field(default_factory=dict)   # Spikformer config field overrides
    train_descriptor: str = SPATIAL    # descriptor InfoNCE trains: "spatial" | "pooled"
    token_dim: int = 8                 # per-token head width ("spatial")
    descriptor: str = "stem2"          # descriptor mode of the saved weights (then whitening)
    norm: str = "image"                # input standardisation ("image" | "patch<p>")
    init_from: str | None = None       # warm start from these weights
    name: str | None = None            # run name (weights metadata, checkpoint name)


@dataclass(frozen=True)
class DataSection(RouteOptions):
    """Training frames: :class:`RouteOptions` + the traversals (``--data`` replaces ``paths``)."""

    paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class TeacherSection:
    """Frozen teacher: ``none`` | ``openclip`` | ``proxy`` | ``place_cnn``."""

    kind: str = "none"
    name: str = ""                     # open_clip model name (default: model_config's file name)
    pretrained: str | None = None      # open_clip tag or local checkpoint file (None: random)
    model_config: str | None = None    # open_clip model-config JSON (custom architectures)
    path: str | None = None            # proxy / place_cnn weights
    cache_dir: str | None = None       # teacher feature cache (None: <out>/teacher_cache)
    batch_size: int = 32               # frames per teacher forward pass


@dataclass(frozen=True)
class WhiteningSection:
    """Post-processing fitted after training on the training frames.

    ``auto``: learned whitening with place labels, PCA-whitening without.
    """

    kind: str = "auto"
    dim: int = 256
    shrink: float = 0.3


@dataclass(frozen=True)
class VPRRecipe:
    """One VPR training run (see the module docstring)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    optim: TrainConfig = field(default_factory=TrainConfig)
    loss: SVSWeights | None = None     # None: InfoNCE only (SVSWeights() when a teacher is set)
    whitening: WhiteningSection = field(default_factory=WhiteningSection)
    device: str = "auto"               # "auto" | "cpu" | "cuda" | "cuda:N"
    bf16: bool = True                  # bf16 autocast on CUDA
    threads: int = 0                   # torch CPU threads (0: leave as is)
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.model.kind not in (SPIKFORMER_MODEL, CNN_MODEL):
            raise ValueError(f"model.kind must be 'spikformer' or 'cnn', got {self.model.kind!r}")
        if self.whitening.kind not in WHITENING_KINDS:
            raise ValueError(f"whitening.kind must be one of {', '.join(WHITENING_KINDS)}, "
                             f"got {self.whitening.kind!r}")
        if self.model.kind == CNN_MODEL and self.teacher.kind != "none":
            raise ValueError("a CNN is trained with InfoNCE only: set teacher.kind: none")


def recipe_from_dict(data: dict[str, Any], overrides: dict[str, Any] | None = None,
                     where: Path | None = None) -> VPRRecipe:
    """Build a :class:`VPRRecipe` from a nested dict plus dotted ``overrides``."""
    tree = _deep_merge({}, data or {})
    for k, v in (overrides or {}).items():
        _set_dotted(tree, k, v)
    try:
        return _build(VPRRecipe, tree, "")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where or 'VPR recipe'}: {exc}") from None


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> VPRRecipe:
    """Read a YAML recipe (``config/vpr/``) and apply dotted overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"VPR recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return resolve_relative(recipe_from_dict(data, overrides, path), path.parent)


def resolve_relative(recipe: VPRRecipe, base: Path) -> VPRRecipe:
    """Make relative file fields absolute when they exist below ``base`` (the recipe's folder).

    Otherwise they stay relative to the current directory.
    """
    def res(v):
        if not isinstance(v, str) or "{" in v or Path(v).is_absolute():
            return v
        return str((base / v).resolve()) if (base / v).exists() else v
    t = recipe.teacher
    teacher = dataclasses.replace(t, model_config=res(t.model_config), path=res(t.path),
                                  pretrained=res(t.pretrained))
    model = dataclasses.replace(recipe.model, init_from=res(recipe.model.init_from))
    return dataclasses.replace(recipe, teacher=teacher, model=model)


def factory_recipe(name: str, config_dir: Path = VPR_CONFIG_DIR) -> VPRRecipe:
    """Load the weight factory's recipe ``config/vpr/<name>.yaml`` (teacher, direct, ...)."""
    return load_recipe(Path(config_dir) / f"{name}.yaml")


def fill_paths(recipe: VPRRecipe, places: dict[str, str]) -> VPRRecipe:
    """Substitute ``{weights_dir}``, ``{teacher}``, ``{direct}`` in the recipe's path fields."""
    def fill(v):
        return v.format(**places) if isinstance(v, str) and "{" in v else v
    model = dataclasses.replace(recipe.model, init_from=fill(recipe.model.init_from))
    teacher = dataclasses.replace(recipe.teacher, path=fill(recipe.teacher.path),
                                  pretrained=fill(recipe.teacher.pretrained),
                                  model_config=fill(recipe.teacher.model_config))
    return dataclasses.replace(recipe, model=model, teacher=teacher)


def recipe_to_dict(recipe: VPRRecipe) -> dict[str, Any]:
    """JSON/YAML-friendly nested dict of ``recipe`` (tuples as lists)."""
    def conv(x):
        if isinstance(x, (tuple, list)):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x
    return conv(dataclasses.asdict(recipe))
