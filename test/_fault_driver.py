"""Fault-injection driver for ``test_faults.py`` (run as a script in a fresh process).

For each scenario and each k = 0, 1, 2, ... a forked child saves a map and is killed with
``os._exit`` (no cleanup, like ``kill -9``) just before its k-th file-system call (Python audit
events); the parent then loads the folder and records what it found, until a child finishes
without being killed. Prints one JSON object: ``{scenario: [outcome per k]}``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from vl2spike_ros.vpr.placemap import FORMAT_V1, PlaceMap, index_path

META = {"variant": "tiny", "weights_hash": "0123456789abcdef", "descriptor_dim": 8,
        "input_size": [1, 32, 64]}
FS_EVENTS = {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.scandir",
             "os.listdir", "os.truncate", "os.link", "os.symlink", "shutil.rmtree", "shutil.move",
             "fcntl.flock", "os.chown", "os.utime"}
KILLED = 137
N_OLD, N_NEW = 5, 7


def places(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_map(n: int, seed: int) -> PlaceMap:
    pm = PlaceMap(8, META)
    pm.add(places(n, seed), [{"frame": i} for i in range(n)])
    return pm


def to_format_1(path: Path) -> None:
    """Rewrite a saved map as the previous format wrote it (index.faiss, format /1)."""
    meta = json.loads((path / "map.json").read_text())
    index_path(path).rename(path / "index.faiss")
    del meta["index_file"]
    (path / "map.json").write_text(json.dumps({**meta, "format": FORMAT_V1}))


def prepare(scenario: str, work: Path) -> tuple[Path, PlaceMap]:
    """Fresh state for one run: (map folder, map to save into it)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path = work / "MAP"
    if scenario == "fresh":
        return path, make_map(N_NEW, 1)
    make_map(N_OLD, 0).save(path)
    if scenario == "format1":
        to_format_1(path)
    if scenario == "grow":  # the node's save_map onto its own map_dir: loaded map + new places
        pm = PlaceMap.load(path)
        pm.add(places(N_NEW - N_OLD, 2), [{"frame": i} for i in range(N_OLD, N_NEW)])
        return path, pm
    return path, make_map(N_NEW, 1)


def run_child(path: Path, pm: PlaceMap, k: int) -> int:
    pid = os.fork()
    if pid == 0:
        count = [0]

        def hook(event: str, _args) -> None:
            if event in FS_EVENTS:
                if count[0] == k:
                    os._exit(KILLED)
                count[0] += 1

        sys.addaudithook(hook)
        try:
            pm.save(path)
        except BaseException:  # noqa: BLE001 - report, never fall back into the parent's loop
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def classify(path: Path, scenario: str) -> str:
    try:
        pm = PlaceMap.load(path, expect_model_meta=META)
    except FileNotFoundError:
        return "absent"
    except Exception as exc:  # noqa: BLE001 - any other failure is a finding
        return f"error: {type(exc).__name__}: {exc}"
    got = pm.similarity(np.eye(8, dtype=np.float32))
    old = places(N_OLD, 0) @ np.eye(8, dtype=np.float32)
    if len(pm) == N_OLD and np.allclose(got, old.T, atol=1e-6):
        return "old"
    new = (places(N_NEW, 1) if scenario != "grow"
           else np.concatenate([places(N_OLD, 0), places(N_NEW - N_OLD, 2)]))
    if len(pm) == N_NEW and np.allclose(got, new.T, atol=1e-6):
        return "new"
    return f"error: unexpected map with {len(pm)} places"


def leftovers_after_next_save(path: Path) -> list[str]:
    """Files a later successful save leaves besides map.json and its index."""
    make_map(N_NEW, 1).save(path)
    keep = {"map.json", index_path(path).name}
    return sorted(p.name for p in path.iterdir() if p.name not in keep)


def main(work: Path) -> dict:
    out: dict = {}
    for scenario in ("overwrite", "format1", "grow", "fresh"):
        runs = []
        for k in range(200):
            path, pm = prepare(scenario, work / scenario)
            code = run_child(path, pm, k)
            runs.append({"k": k, "exit": code, "loads": classify(path, scenario),
                         "leftovers": leftovers_after_next_save(path)})
            if code != KILLED:
                break
        out[scenario] = runs
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
