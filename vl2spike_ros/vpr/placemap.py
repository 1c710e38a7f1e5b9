"""PlaceMap: a FAISS inner-product index over L2-normalised descriptors + per-place metadata.

A map is a folder holding ``map.json`` (format version, model identity, FAISS factory string,
per-place metadata stored as columns, and the name, CRC-32 and size of the index file) and the
FAISS index it names (``index-<token>.faiss``; maps of format ``/1`` use ``index.faiss``).

**Saving replaces the whole map atomically.** The new index is written under a fresh name
(temporary file, fsync, rename), then ``map.json`` is replaced (temporary file, fsync, rename):
that rename is the commit. Until it happens the folder still holds the old ``map.json`` and the
old index file it names, so a crash (kill -9, power loss) at any instant leaves the old map or
the new one, never a mix. Files a crash leaves behind (temporary files, an index no ``map.json``
names) are ignored when loading and removed by the next save. Saves hold an exclusive
``flock`` on the folder, so two writers never interleave. ``map_dir`` stays a plain folder (it
may be a symlink or a mount point).

``map.json`` is validated field by field (types, not truthiness) before anything is trusted;
the optional ``geo_origin`` field ``{"lat": deg, "lon": deg, "alt": m}`` (WGS84, as
``sensor_msgs/NavSatFix``) is the geodetic point that the places' east/north/up poses are
measured from (:mod:`vl2spike_ros.io.poses`); maps without it load as before (``geo_origin``
None).
a map is matched to a model on ``variant, weights_hash, descriptor_dim, input_size`` and, when
both sides record one, the model ``fingerprint`` (weights tensors + descriptor settings).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import secrets
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402

from vl2spike_ros.atomic import atomic_path, write_json_atomic  # noqa: E402

log = logging.getLogger(__name__)

FORMAT = "vl2spike-placemap/2"
FORMAT_V1 = "vl2spike-placemap/1"  # read only: index always named INDEX_FILE, no index_file key
FORMATS = (FORMAT_V1, FORMAT)
INDEX_FILE = "index.faiss"
META_FILE = "map.json"
MODEL_KEYS = ("variant", "weights_hash", "descriptor_dim", "input_size")
FINGERPRINT = "fingerprint"
_INDEX_NAME = re.compile(r"^index(-[0-9a-f]{16})?\.faiss$")
_LEFTOVER = re.compile(r"^(index(-[0-9a-f]{16})?\.faiss|\.index(-[0-9a-f]{16})?\.faiss\..+\.tmp|"
                       r"\.map\.json\..+\.tmp)$")
_CRC = re.compile(r"^[0-9a-f]{8}$")
_FIELDS = {"format": str, "dim": int, "factory": str, "model": dict, "n_places": int,
           "index_crc32": str, "index_bytes": int, "places": dict}
_MODEL_FIELDS = {"variant": str, "weights_hash": str, "descriptor_dim": int, "input_size": list,
                 FINGERPRINT: str}
_TYPE_NAMES = {str: "a string", int: "an integer", dict: "an object", list: "a list"}
GEO_ORIGIN = "geo_origin"
_GEO_RANGES = {"lat": 90.0, "lon": 180.0, "alt": 1e7}  # |value| limits of the origin fields


class MapMismatchError(ValueError):
    """The map was built by another model (variant, weights, descriptor settings or size)."""


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


def _from_columns(cols: dict[str, list], n: int, path: Path) -> list[dict]:
    for k, v in cols.items():
        if not isinstance(v, list) or len(v) != n:
            found = f"{len(v)} entries" if isinstance(v, list) else type(v).__name__
            raise MapFormatError(f"{path}: column {k!r} of 'places' must list {n} places "
                                 f"(n_places), found {found}")
    keys = list(cols)
    return [{k: cols[k][i] for k in keys if cols[k][i] is not None} for i in range(n)]


# ------------------------------------------------------------------------------- model identity
def check_model_meta(found: dict, expected: dict, where: str = "map") -> None:
    """Raise :class:`MapMismatchError` unless map and model identities match.

    Every ``MODEL_KEYS`` entry of the loaded model's ``expected`` must be recorded by the map's
    ``found`` and equal; ``fingerprint`` is compared when both record one (an older map without
    one is accepted with a logged warning).
    """
    if not isinstance(found, dict):
        raise MapMismatchError(f"{where} records no model identity (got {found!r}); rebuild it "
                               "with `vl2spike map build` for these weights")
    missing = [k for k in MODEL_KEYS if k in expected and k not in found]
    if missing:
        raise MapMismatchError(f"{where} does not record the model's {', '.join(missing)}: "
                               "cannot check that it was built with these weights; rebuild it "
                               "with `vl2spike map build`")
    keys = list(MODEL_KEYS) + ([FINGERPRINT] if FINGERPRINT in found and FINGERPRINT in expected
                               else [])
    diffs = [f"{k}: {where} has {found.get(k)!r}, model has {expected.get(k)!r}"
             for k in keys if k in expected and _norm(found[k]) != _norm(expected[k])]
    if diffs:
        raise MapMismatchError(f"{where} was built by a different model ({'; '.join(diffs)}); "
                               "rebuild it with `vl2spike map build` for these weights")
    if FINGERPRINT in expected and FINGERPRINT not in found:
        log.warning("%s records no model fingerprint (built before fingerprints existed): "
                    "variant, weights_hash, descriptor_dim and input_size match, but the weights' "
                    "descriptor settings (JSON sidecar) cannot be checked; rebuild the map with "
                    "`vl2spike map build` to record them", where)


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
        _check_model_fields(self.model_meta, "model_meta", self.dim)
        self.factory = factory
        try:
            self.index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"bad FAISS factory string {factory!r}: {exc}") from exc
        self._metas: list[dict] = []
        self._dense: np.ndarray | None = None
        self.geo_origin: tuple[float, float, float] | None = None  # (lat, lon, alt)

    def set_geo_origin(self, lat: float, lon: float, alt: float = 0.0) -> None:
        """Record the geodetic origin (WGS84 degrees, metres) of the places' local poses."""
        self.geo_origin = _geo_origin({"lat": float(lat), "lon": float(lon), "alt": float(alt)},
                                      "geo origin")

    def geo_origin_json(self) -> dict[str, float] | None:
        """``{"lat", "lon", "alt"}`` of the geodetic origin as stored in map.json, or None."""
        return None if self.geo_origin is None else dict(zip(_GEO_RANGES, self.geo_origin))

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
        """Return a place's metadata: id, source frame/stamp, optional pose and frame_id."""
        if not 0 <= int(place_id) < len(self._metas):
            raise KeyError(f"no place {place_id} (map has {len(self)})")
        return self._metas[int(place_id)]

    # --------------------------------------------------------------------------- save / load
    def save(self, map_dir: str | Path) -> Path:
        """Replace the map in ``map_dir`` atomically (see the module docstring)."""
        map_dir = Path(map_dir)
        _check_model_fields(self.model_meta, f"model metadata of the map for {map_dir}", self.dim)
        map_dir.mkdir(parents=True, exist_ok=True)
        with _folder_lock(map_dir):
            name = f"index-{secrets.token_hex(8)}.faiss"
            idx = map_dir / name
            with atomic_path(idx) as tmp:
                faiss.write_index(self.index, str(tmp))
            _fsync_dir(map_dir)
            meta = {"format": FORMAT, "dim": self.dim, "factory": self.factory,
                    "model": self.model_meta, "n_places": len(self), "index_file": name,
                    "index_crc32": _crc32(idx), "index_bytes": idx.stat().st_size,
                    "places": _to_columns(self._metas)}
            if self.geo_origin is not None:
                meta[GEO_ORIGIN] = self.geo_origin_json()
            write_json_atomic(map_dir / META_FILE, meta)
            _fsync_dir(map_dir)  # the commit point is durable from here on
            _remove_leftovers(map_dir, keep=name)
        log.info("saved %d places to %s", len(self), map_dir)
        return map_dir

    @classmethod
    def load(cls, map_dir: str | Path, expect_model_meta: dict | None = None,
             verify: bool = True) -> "PlaceMap":
        """Load a map folder.

        Raises ``MapMismatchError`` if ``expect_model_meta`` disagrees, ``MapFormatError`` (a
        ValueError) if a file is corrupt/truncated or ``map.json`` breaks its schema,
        FileNotFoundError if absent.
        """
        map_dir = Path(map_dir)
        meta, idx_path = _read_meta(map_dir), None
        for _ in range(3):  # a concurrent save may replace the index between the two reads
            idx_path = map_dir / _index_name(meta)
            if idx_path.is_file():
                break
            again = _read_meta(map_dir)
            if _index_name(again) == _index_name(meta):
                break
            meta = again
        if expect_model_meta is not None:
            check_model_meta(meta["model"], expect_model_meta, where=f"map {map_dir}")
        if not idx_path.is_file():
            raise FileNotFoundError(f"{idx_path} missing (map folder incomplete)")
        size = idx_path.stat().st_size
        if size != meta["index_bytes"] or (verify and _crc32(idx_path) != meta["index_crc32"]):
            raise MapFormatError(f"{idx_path} is corrupt or truncated ({size} bytes, CRC checked "
                                 f"against map.json: {meta['index_bytes']} bytes, crc32 "
                                 f"{meta['index_crc32']}); rebuild the map")
        try:
            index = faiss.read_index(str(idx_path))
        except RuntimeError as exc:
            raise MapFormatError(f"cannot read FAISS index {idx_path}: {exc}") from exc
        if index.d != meta["dim"] or index.ntotal != meta["n_places"]:
            raise MapFormatError(f"{idx_path} holds {index.ntotal} places of dim {index.d} but "
                                 f"map.json lists {meta['n_places']} places of dim {meta['dim']}")
        pm = cls.__new__(cls)
        pm.dim, pm.model_meta, pm.factory = meta["dim"], meta["model"], meta["factory"]
        pm.index, pm._dense = index, None
        pm._metas = _from_columns(meta["places"], meta["n_places"], map_dir / META_FILE)
        pm.geo_origin = meta.get(GEO_ORIGIN)
        return pm


def index_path(map_dir: str | Path) -> Path:
    """Return the index file the map in ``map_dir`` uses now (named by its ``map.json``)."""
    return Path(map_dir) / _index_name(_read_meta(Path(map_dir)))


# ------------------------------------------------------------------------------- folder commit
# Tests kill a save at every file-system call (audit hooks); keep every step below atomic.
@contextlib.contextmanager
def _folder_lock(map_dir: Path) -> Iterator[None]:
    """Exclusive ``flock`` on the map folder for one save (released on exit or on a crash)."""
    fd = os.open(map_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_leftovers(map_dir: Path, keep: str) -> None:
    """Remove index files ``map.json`` no longer names and temporary files of crashed saves."""
    for entry in os.scandir(map_dir):
        if entry.name != keep and _LEFTOVER.match(entry.name) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _index_name(meta: dict) -> str:
    return meta.get("index_file", INDEX_FILE)


# ------------------------------------------------------------------------------- map.json schema
def _type_error(path: Path, field: str, value: Any, typ: type) -> MapFormatError:
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return MapFormatError(f"{path}: field {field!r} must be {_TYPE_NAMES[typ]}, got {shown} "
                          f"({type(value).__name__})")


def _typed(value: Any, typ: type) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _check_model_fields(model: Any, where: Any, dim: int) -> None:
    """Types of the model identity (``model`` in map.json); raise MapFormatError naming a field."""
    if not _typed(model, dict):
        raise _type_error(where, "model", model, dict)
    for key, typ in _MODEL_FIELDS.items():
        if key in model and not _typed(model[key], typ):
            raise _type_error(where, f"model.{key}", model[key], typ)
    if "descriptor_dim" not in model:
        raise MapFormatError(f"{where}: field 'model' lacks 'descriptor_dim'")
    if model["descriptor_dim"] != dim:
        raise MapFormatError(f"{where}: model.descriptor_dim {model['descriptor_dim']} differs "
                             f"from dim {dim}")
    size = model.get("input_size", [1, 1, 1])
    if len(size) != 3 or not all(_typed(v, int) and v > 0 for v in size):
        raise MapFormatError(f"{where}: field 'model.input_size' must be 3 positive integers "
                             f"[C, H, W], got {json.dumps(size)}")
    if model.get(FINGERPRINT) == "" or model.get("weights_hash") == "":
        raise MapFormatError(f"{where}: model fingerprint / weights_hash must not be empty")


def _check_meta(meta: Any, path: Path) -> dict:
    """Validate the parsed ``map.json`` (types and ranges, field by field); returns it."""
    if not isinstance(meta, dict):
        raise MapFormatError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") not in FORMATS:
        raise MapFormatError(f"{path}: field 'format' is {json.dumps(meta.get('format'))}, "
                             f"expected one of {', '.join(FORMATS)} (not a vl2spike place map, "
                             "or written by a newer version)")
    missing = [k for k in _FIELDS if k not in meta]
    if missing:
        raise MapFormatError(f"{path}: missing field(s) {', '.join(missing)}")
    for key, typ in _FIELDS.items():
        if not _typed(meta[key], typ):
            raise _type_error(path, key, meta[key], typ)
    for key, low in (("dim", 1), ("n_places", 0), ("index_bytes", 0)):
        if meta[key] < low:
            raise MapFormatError(f"{path}: field {key!r} must be >= {low}, got {meta[key]}")
    if not _CRC.match(meta["index_crc32"]):
        raise MapFormatError(f"{path}: field 'index_crc32' must be 8 hex digits, got "
                             f"{json.dumps(meta['index_crc32'])}")
    if meta["format"] == FORMAT:
        name = meta.get("index_file")
        if not (_typed(name, str) and _INDEX_NAME.match(name)):
            raise MapFormatError(f"{path}: field 'index_file' must name an index file in the "
                                 f"map folder (index-<16 hex>.faiss), got {json.dumps(name)}")
    elif "index_file" in meta:
        raise MapFormatError(f"{path}: field 'index_file' is not part of format {FORMAT_V1}")
    _check_model_fields(meta["model"], path, meta["dim"])
    if GEO_ORIGIN in meta:
        meta[GEO_ORIGIN] = _geo_origin(meta[GEO_ORIGIN], path)
    return meta


def _geo_origin(value: Any, where: Any) -> tuple[float, float, float]:
    """Check a ``geo_origin`` object (exactly lat, lon, alt: finite numbers in range)."""
    if not _typed(value, dict):
        raise _type_error(where, GEO_ORIGIN, value, dict)
    if set(value) != set(_GEO_RANGES):
        raise MapFormatError(f"{where}: field {GEO_ORIGIN!r} must have exactly the keys lat, "
                             f"lon, alt, got {', '.join(sorted(map(str, value))) or 'none'}")
    out = []
    for key, limit in _GEO_RANGES.items():
        v = value[key]
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not (number and math.isfinite(v) and abs(v) <= limit):
            raise MapFormatError(f"{where}: field '{GEO_ORIGIN}.{key}' must be a number in "
                                 f"[-{limit:g}, {limit:g}], got {json.dumps(v, default=str)}")
        out.append(float(v))
    return out[0], out[1], out[2]


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
    return _check_meta(meta, path)
