"""PlaceMap: a FAISS inner-product index over L2-normalised descriptors + per-place metadata.

A map is a folder: ``index.faiss`` (``faiss.write_index``) and ``map.json`` (format version,
model metadata, FAISS factory string, per-place metadata stored as columns, and the index
file's CRC-32 and size). Both files are written atomically, ``map.json`` last; a crash between
the two leaves a map whose CRC/size check fails with a clear error, never a silent mix.
"""
from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path

import numpy as np

logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402

from vl2spike_ros.atomic import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

FORMAT = "vl2spike-placemap/1"
INDEX_FILE = "index.faiss"
META_FILE = "map.json"
MODEL_KEYS = ("variant", "weights_hash", "descriptor_dim", "input_size")


class MapMismatchError(ValueError):
    """The map was built by another model (variant, weights or descriptor size)."""


class MapFormatError(ValueError):
    """The map folder is missing, corrupt or truncated."""


def _crc32(path: Path) -> str:
    """CRC-32 of a file (corruption check; fast enough for 100k-place maps)."""
    crc = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _to_columns(metas: list[dict]) -> dict[str, list]:
    """Per-place dicts -> columns (None where a place lacks a key); fast to parse."""
    keys: dict[str, None] = {}
    for m in metas:
        keys.update(dict.fromkeys(m))
    return {k: [m.get(k) for m in metas] for k in keys}


def _from_columns(cols: dict[str, list], n: int) -> list[dict]:
    for k, v in cols.items():
        if not isinstance(v, list) or len(v) != n:
            raise MapFormatError(f"map.json column {k!r} does not list {n} places")
    keys = list(cols)
    return [{k: cols[k][i] for k in keys if cols[k][i] is not None} for i in range(n)]


def check_model_meta(found: dict, expected: dict, where: str = "map") -> None:
    """Raise :class:`MapMismatchError` when a key of ``MODEL_KEYS`` present in both differs."""
    diffs = [f"{k}: {where} has {found.get(k)!r}, model has {expected.get(k)!r}"
             for k in MODEL_KEYS
             if k in expected and k in found and _norm(found[k]) != _norm(expected[k])]
    if diffs:
        raise MapMismatchError(f"{where} was built by a different model ({'; '.join(diffs)}); "
                               "rebuild it with `vl2spike map build` for these weights")


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


class PlaceMap:
    """Places with descriptors ``[N, dim]`` (L2-normalised) searched by inner product."""

    def __init__(self, dim: int, model_meta: dict | None = None, factory: str = "Flat"):
        if dim < 1:
            raise ValueError(f"descriptor dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.model_meta = dict(model_meta or {})
        self.model_meta.setdefault("descriptor_dim", self.dim)
        if int(self.model_meta["descriptor_dim"]) != self.dim:
            raise ValueError(f"model_meta descriptor_dim {self.model_meta['descriptor_dim']} != "
                             f"map dim {dim}")
        self.factory = factory
        try:
            self.index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"bad FAISS factory string {factory!r}: {exc}") from exc
        self._metas: list[dict] = []
        self._dense: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def _check(self, descs: np.ndarray) -> np.ndarray:
        descs = np.ascontiguousarray(np.atleast_2d(descs), dtype=np.float32)
        if descs.ndim != 2 or descs.shape[1] != self.dim:
            raise ValueError(f"descriptors must be [N, {self.dim}], got {descs.shape}")
        if not np.isfinite(descs).all():
            raise ValueError("descriptors contain NaN or inf")
        return descs

    def add(self, descs: np.ndarray, metas: list[dict] | None = None) -> np.ndarray:
        """Add places ``[N, dim]``; returns their ids. ``metas``: one JSON-able dict each."""
        descs = self._check(descs)
        metas = [{} for _ in descs] if metas is None else list(metas)
        if len(metas) != len(descs):
            raise ValueError(f"{len(descs)} descriptors but {len(metas)} metadata entries")
        if not self.index.is_trained:
            self.index.train(descs)
        start = len(self)
        self.index.add(descs)
        ids = np.arange(start, start + len(descs))
        for i, m in zip(ids, metas):
            self._metas.append({"place_id": int(i), **m})
        self._dense = None
        return ids

    def search(self, descs: np.ndarray, top_k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(scores ``[Q, k]``, ids ``[Q, k]``) best first; ids are -1 where fewer than k exist."""
        if len(self) == 0:
            raise ValueError("the place map is empty")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        return self.index.search(self._check(descs), top_k)

    def similarity(self, descs: np.ndarray) -> np.ndarray:
        """Dense similarity ``[Q, N]`` against every place (for sequence matching)."""
        if self._dense is None:
            self._dense = self.index.reconstruct_n(0, len(self)) if len(self) else \
                np.zeros((0, self.dim), np.float32)
        return self._check(descs) @ self._dense.T

    def place(self, place_id: int) -> dict:
        """Metadata of one place (``place_id``, source frame/stamp, optional pose, frame_id)."""
        if not 0 <= int(place_id) < len(self._metas):
            raise KeyError(f"no place {place_id} (map has {len(self)})")
        return self._metas[int(place_id)]

    # --------------------------------------------------------------------------- save / load
    def save(self, map_dir: str | Path) -> Path:
        """Write ``map_dir/index.faiss`` and ``map_dir/map.json`` atomically."""
        map_dir = Path(map_dir)
        map_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(map_dir / INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        idx = map_dir / INDEX_FILE
        write_json_atomic(map_dir / META_FILE, {
            "format": FORMAT, "dim": self.dim, "factory": self.factory,
            "model": self.model_meta, "n_places": len(self),
            "index_crc32": _crc32(idx), "index_bytes": idx.stat().st_size,
            "places": _to_columns(self._metas)})
        log.info("saved %d places to %s", len(self), map_dir)
        return map_dir

    @classmethod
    def load(cls, map_dir: str | Path, expect_model_meta: dict | None = None,
             verify: bool = True) -> "PlaceMap":
        """Load a map folder; ``MapMismatchError`` if ``expect_model_meta`` disagrees,
        ``MapFormatError`` (a ValueError) if a file is corrupt/truncated, FileNotFoundError if absent.
        """
        map_dir = Path(map_dir)
        meta = _read_meta(map_dir)
        if expect_model_meta is not None:
            check_model_meta(meta["model"], expect_model_meta, where=f"map {map_dir}")
        idx_path = map_dir / INDEX_FILE
        if not idx_path.is_file():
            raise FileNotFoundError(f"{idx_path} missing (map folder incomplete)")
        size = idx_path.stat().st_size
        if size != meta["index_bytes"] or (verify and _crc32(idx_path) != meta["index_crc32"]):
            raise MapFormatError(f"{idx_path} is corrupt or truncated ({size} bytes, "
                                 f"expected {meta['index_bytes']}); rebuild the map")
        try:
            index = faiss.read_index(str(idx_path))
        except RuntimeError as exc:
            raise MapFormatError(f"cannot read FAISS index {idx_path}: {exc}") from exc
        if index.d != meta["dim"] or index.ntotal != meta["n_places"]:
            raise MapFormatError(f"{idx_path} holds {index.ntotal} x {index.d} but map.json "
                                 f"lists {meta['n_places']} x {meta['dim']}")
        pm = cls.__new__(cls)
        pm.dim, pm.model_meta, pm.factory = int(meta["dim"]), meta["model"], meta["factory"]
        pm.index, pm._dense = index, None
        pm._metas = _from_columns(meta["places"], int(meta["n_places"]))
        return pm


def _read_meta(map_dir: Path) -> dict:
    path = map_dir / META_FILE
    if not map_dir.is_dir():
        raise FileNotFoundError(f"map folder {map_dir} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: {map_dir} is not a place map folder")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MapFormatError(f"{path} is corrupt or truncated: {exc}") from exc
    need = ("format", "dim", "factory", "model", "n_places", "index_crc32", "index_bytes",
            "places")
    if not isinstance(meta, dict) or any(k not in meta for k in need):
        raise MapFormatError(f"{path} lacks required fields {need}")
    if meta["format"] != FORMAT or not isinstance(meta["places"], dict):
        raise MapFormatError(f"{path} has format {meta['format']!r}, expected {FORMAT!r}")
    return meta
