"""VPRTempo (Hussaini et al., ICRA 2024) on the Nordland held-out segment, both directions.

Runs INSIDE the separate VPRTempo venv (``make bench-vprtempo`` creates ``.venv-vprtempo``
with ``vprtempo`` installed from PyPI). For each direction VPRTempo is trained, with the
package's own ``VPRTempoTrain`` modules and STDP/ITP training loop, on the database season of
the held-out segment (one output neuron per place), then queried with the other season through
the package's ``VPRTempo`` inference modules. The output-layer activations of all modules,
concatenated, are the query x place similarity (higher = more similar), exactly the matrix
VPRTempo's own ``evaluate`` ranks.

Images come from ``vl2spike_ros.data.datasets.load_nordland`` and metrics from
``vl2spike_ros.bench.nordland.evaluate_similarity`` (the repository is put on ``sys.path``;
those modules need only numpy/opencv), so protocol and metrics are those of every other method
in ``vl2spike bench vpr``. Outputs:

* ``<work>/<direction>/model.pth`` + ``meta.json``: trained modules (VPRTempo's own state-dict
  format, loaded back with ``weights_only=True``); a rerun with the same settings reuses them.
* ``<work>/similarity.npz``: the full float32 similarity matrices (git-ignored, ~16 MB).
* ``--json`` (default ``bench/results/vprtempo_nordland.json``): metrics in the per-method layout
  of ``bench/results/vpr_nordland.json`` plus PR curves, timings and provenance.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

log = logging.getLogger("run_vprtempo")
DIRECTIONS = {"summer_to_winter": ("summer", "winter"), "winter_to_summer": ("winter", "summer")}


@dataclass(frozen=True)
class Settings:
    """VPRTempo recipe. Paper/Nordland recipe: 28x28, 7x7 patch norm, <=1,100 places/module,
    4 epochs. ``filter=1``: every held-out frame is a place (the protocol of the benchmark)."""
    dims: tuple[int, int] = (28, 28)
    patches: int = 7
    max_module: int = 1100
    epoch: int = 4
    filter: int = 1
    seed: int = 0
    limit: int | None = None  # first N held-out places only (smoke runs)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _vprtempo_args(s: Settings, n_places: int, db: str, query: str) -> argparse.Namespace:
    """The argument namespace VPRTempo's modules read their configuration from."""
    return argparse.Namespace(
        dataset="nordland", data_dir="", database_places=n_places, query_places=n_places,
        max_module=s.max_module, database_dirs=db, query_dir=query, GT_tolerance=0, skip=0,
        filter=s.filter, epoch=s.epoch, patches=s.patches, dims=",".join(map(str, s.dims)),
        train_new_model=True, quantize=False, PR_curve=False, sim_mat=False, demo=False)


def module_layout(n_places: int, max_module: int) -> tuple[int, int, int]:
    """(num_modules, out_dim, final_out_dim) exactly as VPRTempo's ``main.py`` splits places."""
    if n_places < 1 or max_module < 1:
        raise ValueError(f"need >= 1 place and max_module >= 1, got {n_places}, {max_module}")
    num_modules = -(-n_places // max_module)
    rem = n_places % max_module
    if num_modules == 1:  # (main.py divides by num_modules - 1 here; one module holds all)
        return 1, n_places, n_places
    if rem:
        return num_modules, (n_places - rem) // (num_modules - 1), rem
    return num_modules, n_places // num_modules, n_places // num_modules


def _module_kwargs(i: int, num_modules: int, out_dim: int, final: int) -> dict:
    # main.py passes the remainder size to the last module only (None = use out_dim)
    return {"out_dim": out_dim, "out_dim_remainder": final if i == num_modules - 1 and
            num_modules > 1 else None}


def encode(images: np.ndarray, s: Settings):
    """uint8 ``[N, H, W]`` -> VPRTempo input spikes ``[N, dims[0]*dims[1]]`` (its ProcessImage:
    gamma correction, bilinear resize, patch normalisation, intensity -> spike rate)."""
    import torch
    from vprtempo.src.dataset import ProcessImage

    proc = ProcessImage(list(s.dims), s.patches)
    return torch.stack([proc(torch.from_numpy(np.ascontiguousarray(im)).unsqueeze(0))
                        for im in images])


def train(db_images: np.ndarray, s: Settings, db: str, query: str) -> list:
    """Train VPRTempo modules on the database images (place i = image i); returns the modules."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from vprtempo.VPRTempoTrain import VPRTempoTrain

    n = len(db_images)
    args = _vprtempo_args(s, n, db, query)
    num_modules, out_dim, final = module_layout(n, s.max_module)
    models = [VPRTempoTrain(args, list(s.dims), log, num_modules,
                            **_module_kwargs(i, num_modules, out_dim, final))
              for i in range(num_modules)]
    spikes = encode(db_images, s)
    labels = torch.arange(n) * s.filter  # VPRTempo labels are frame numbers (index * filter)
    trained: list[str] = []
    for layer_name, _ in sorted(models[0].layer_dict.items(), key=lambda kv: kv[1]):
        log.info("training %s of %d module(s)", layer_name, num_modules)
        for i, model in enumerate(models):
            model.train()
            lo = i * s.max_module
            hi = min(lo + min(model.output, s.max_module), n)
            loader = DataLoader(TensorDataset(spikes[lo:hi], labels[lo:hi]), batch_size=1,
                                shuffle=True, num_workers=0)
            model.train_model(loader, getattr(model, layer_name), model, i,
                              prev_layers=list(trained))
        trained.append(layer_name)
    for m in models:
        m.eval()
    return models


def load_inference(path: Path, s: Settings, n_places: int, db: str, query: str) -> list:
    """VPRTempo inference modules with the trained weights of ``path`` (weights_only load)."""
    from vprtempo.VPRTempo import VPRTempo

    args = _vprtempo_args(s, n_places, db, query)
    num_modules, out_dim, final = module_layout(n_places, s.max_module)
    models = [VPRTempo(args, list(s.dims), log, num_modules, str(path.parent),
                       **_module_kwargs(i, num_modules, out_dim, final))
              for i in range(num_modules)]
    for m in models:
        m.eval()
    models[0].load_model(models, str(path))
    return models


def query_similarity(models: list, q_images: np.ndarray, s: Settings) -> tuple[np.ndarray, float]:
    """Similarity ``[Q, M]`` and seconds for encoding + inference, one query at a time as in
    VPRTempo's ``evaluate`` (feature layer then output layer of every module, concatenated)."""
    import torch
    from torch import nn
    from tqdm import tqdm

    head = models[0]
    head.inferences = [nn.Sequential(m.feature_layer.w, m.output_layer.w) for m in models]
    with torch.no_grad():
        head.forward(encode(q_images[:1], s)[0:1])  # warm-up (first-call overheads)
        rows = []
        t0 = time.perf_counter()
        for im in tqdm(q_images, desc="VPRTempo queries", leave=False, disable=None):
            rows.append(head.forward(encode(im[None], s)))
        seconds = time.perf_counter() - t0
    return torch.cat(rows).numpy().astype(np.float32), seconds


def run_direction(name: str, seasons: dict, s: Settings, work: Path) -> dict:
    """Train (or reuse a finished model with the same settings) and query one direction."""
    import torch

    from vl2spike_ros.atomic import atomic_path, write_json_atomic

    query, db = DIRECTIONS[name]
    ddir = work / name
    ddir.mkdir(parents=True, exist_ok=True)
    model_path, meta_path = ddir / "model.pth", ddir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    n = len(seasons[db])
    if meta.get("settings_key") == s.key() and model_path.is_file():
        log.info("%s: reusing trained model %s (%.0f s training)", name, model_path,
                 meta["train_seconds"])
    else:
        torch.manual_seed(s.seed)
        np.random.seed(s.seed)  # VPRTempo draws its sparse connectivity with numpy
        t0 = time.perf_counter()
        models = train(seasons[db], s, db, query)
        meta = {"settings_key": s.key(), "settings": asdict(s), "database": db,
                "n_places": n, "train_seconds": time.perf_counter() - t0,
                "torch_threads": torch.get_num_threads()}
        with atomic_path(model_path) as tmp:
            models[0].save_model(models, str(tmp))
        write_json_atomic(meta_path, meta)
    models = load_inference(model_path, s, n, db, query)
    sim, q_seconds = query_similarity(models, seasons[query], s)
    return {"sim": sim, "query_seconds": q_seconds, "train_seconds": meta["train_seconds"],
            "database": db, "query": query}


def result_json(runs: dict, s: Settings, seq_len: int, root: Path, threads: int) -> dict:
    """Per-method result (layout of ``vpr_nordland.json``) + PR curves + provenance."""
    from importlib.metadata import version

    import torch

    from vl2spike_ros.bench.nordland import curves_to_json, evaluate_similarity

    res, curves = evaluate_similarity({d: r["sim"] for d, r in runs.items()},
                                      {d: r["query_seconds"] for d, r in runs.items()},
                                      seq_len=seq_len)
    res["train_seconds"] = float(sum(r["train_seconds"] for r in runs.values()))
    res["per_direction"] = {d: {"database": r["database"], "query": r["query"],
                                "train_seconds": r["train_seconds"],
                                "query_seconds": r["query_seconds"],
                                "queries_per_s": len(r["sim"]) / r["query_seconds"]}
                            for d, r in runs.items()}
    res["n_places"] = int(len(next(iter(runs.values()))["sim"]))
    res["descriptor_dim"] = res["n_places"]  # one output neuron per database place
    res["similarity"] = "VPRTempo output-layer activation (all modules concatenated)"
    res["vprtempo"] = {
        "version": version("vprtempo"), "torch": torch.__version__, "torch_threads": threads,
        "dataset": str(root), "settings": asdict(s),
        "num_modules": module_layout(res["n_places"], s.max_module)[0],
        "deviations": ["filter=1 (package default 8): every held-out frame is a place, the "
                       "benchmark protocol (the shared Nordland frames are already every 10th)",
                       "training images fed from memory (load_nordland, num_workers=0) instead of "
                       "VPRTempo's CSV/DataLoader; same ProcessImage, shuffle, batch 1, STDP loop",
                       "dims/patches/max_module: the paper's Nordland recipe (28x28, 7, 1100), "
                       "not the package demo defaults (56x56, 15, 500)"]}
    res["pr_curve_tol1"] = curves_to_json(curves)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=None, help="folder holding nordland/ (default: paths)")
    p.add_argument("--json", default=str(REPO / "bench/results/vprtempo_nordland.json"))
    p.add_argument("--work-dir", default=str(REPO / "bench/work/vprtempo"))
    p.add_argument("--dims", default="28,28", help="input H,W (paper Nordland recipe 28,28)")
    p.add_argument("--patches", type=int, default=7, help="patch-normalisation size")
    p.add_argument("--max-module", type=int, default=1100, help="places per module")
    p.add_argument("--epoch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seq-len", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--limit", type=int, default=None, help="first N held-out places (smoke run)")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return _run(ns)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"run_vprtempo: error: {e}", file=sys.stderr)
        return 2


def _run(ns) -> int:
    import torch

    from vl2spike_ros.atomic import write_json_atomic
    from vl2spike_ros.paths import nordland_root
    from vl2spike_ros.data.datasets import load_nordland

    torch.set_num_threads(ns.threads)
    dims = tuple(int(v) for v in ns.dims.split(","))
    if len(dims) != 2 or min(dims) < ns.patches:
        raise ValueError(f"--dims must be H,W with both >= --patches, got {ns.dims!r}")
    s = Settings(dims=dims, patches=ns.patches, max_module=ns.max_module, epoch=ns.epoch,
                 seed=ns.seed, limit=ns.limit)
    root = nordland_root(Path(ns.data_root) / "nordland" if ns.data_root else None)
    seasons = {k: load_nordland(root, k, "test")[0][:ns.limit] for k in ("summer", "winter")}
    work = Path(ns.work_dir) / s.key()
    runs = {d: run_direction(d, seasons, s, work) for d in DIRECTIONS}
    np.savez(work / "similarity.npz", **{d: r["sim"] for d, r in runs.items()})
    res = result_json(runs, s, ns.seq_len, root, torch.get_num_threads())
    write_json_atomic(ns.json, res)
    for d in DIRECTIONS:
        t = res[d]
        print(f"vprtempo {d}: R@1 tol0/1/2 {t['tol0']['r1']:.1f}/{t['tol1']['r1']:.1f}/"
              f"{t['tol2']['r1']:.1f} %, R@5 {t['tol1']['r5']:.1f}, R@10 {t['tol1']['r10']:.1f}, "
              f"PR-AUC {t['tol1']['pr_auc']:.3f}, seq R@1 {res['sequence'][d]['tol1']['r1']:.1f}, "
              f"train {res['per_direction'][d]['train_seconds']:.0f} s, "
              f"{res['per_direction'][d]['queries_per_s']:.0f} q/s")
    print(f"wrote {ns.json}; similarity matrices in {work / 'similarity.npz'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
