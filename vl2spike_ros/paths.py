"""Locations of data, packaged assets and default weights.

The real data lives outside the repository (read-only). Its root is, in order:
``$VL2SPIKE_DATA_ROOT``, then ``../shared/data`` next to the source checkout or the current
directory.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
ENV_DATA_ROOT = "VL2SPIKE_DATA_ROOT"


def _candidates() -> list[Path]:
    cands = []
    env = os.environ.get(ENV_DATA_ROOT)
    if env:
        return [Path(env).expanduser()]
    cands.append(PACKAGE_DIR.parent.parent / "shared" / "data")
    cands.append(Path.cwd().parent / "shared" / "data")
    cands.append(Path.cwd() / "shared" / "data")
    return cands


def data_root(required: bool = True) -> Path | None:
    """Return the data root folder; raise ``FileNotFoundError`` naming what was tried."""
    cands = _candidates()
    for c in cands:
        if c.is_dir():
            return c
    if not required:
        return None
    tried = ", ".join(str(c) for c in cands)
    raise FileNotFoundError(
        f"data root not found (tried: {tried}). Set {ENV_DATA_ROOT} to the folder holding "
        "cifar10.tar and nordland/, or pass --data-root."
    )


def resolve_data_path(path: str | os.PathLike | None, default_rel: str) -> Path:
    """``path`` if given, else ``data_root()/default_rel``; raise if it does not exist."""
    p = Path(path).expanduser() if path else data_root() / default_rel
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    return p


def cifar10_tar(path: str | os.PathLike | None = None) -> Path:
    return resolve_data_path(path, "cifar10.tar")


def nordland_root(path: str | os.PathLike | None = None) -> Path:
    return resolve_data_path(path, "nordland")
