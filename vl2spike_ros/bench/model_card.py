"""Model card (markdown) for the packaged default VPR weights.

Read from the weights' JSON, the ``bench vpr`` results (:data:`BENCH_JSON`) and the energy
report (:data:`ENERGY_JSON`); no benchmark is run. The layers that produce the descriptor and
the parameter split are found by running the place descriptor once on a blank image with
forward hooks (what ran, and what ran before the first spiking neuron). Regenerate the card
from the committed results with ``python -m vl2spike_ros.bench.model_card`` or
``vl2spike bench vpr --model-card MD --from-json bench/results/vpr_nordland.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import torch
from spikingjelly.activation_based import functional, neuron
from torch import nn

from vl2spike_ros.atomic import write_bytes_atomic
from vl2spike_ros.bench import generalisation
from vl2spike_ros.models import (config_path_for, default_vpr_weights, read_model_meta,
                                 weights_hash)
from vl2spike_ros.vpr.place import PlaceDescriptor, load_place_descriptor, settings_from_meta

BENCH_JSON = Path("bench/results/vpr_nordland.json")
ENERGY_JSON = Path("bench/results/energy.json")
CLIP_NAME = "CLIP ViT-B/32 image tower"


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def method_of(bench: dict, weights: str | Path) -> str:
    """Name of the benchmarked method whose weights file is byte-identical to ``weights``."""
    h = weights_hash(weights)
    for name, m in bench["methods"].items():
        if m.get("model", {}).get("weights_hash") == h:
            return name
    raise ValueError(f"{weights} is not among the benchmarked weights")


# ----------------------------------------------------------------------------- layers, params
def _ran_modules(backbone: nn.Module, x: torch.Tensor, run) -> list[str]:
    """Names of ``backbone``'s modules in the order their forward finished during ``run(x)``."""
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, _o, n=name: order.append(n))
             for name, m in backbone.named_modules() if name]
    try:
        with torch.no_grad():
            run(x)
    finally:
        for h in hooks:
            h.remove()
        functional.reset_net(backbone)
    return order


def _with_parents(names: list[str]) -> set[str]:
    """``names`` and every module above them (a parent may run only through its children)."""
    parts = [n.split(".") for n in names]
    return {".".join(p[:k]) for p in parts for k in range(1, len(p) + 1)}


def _outermost_unused(backbone: nn.Module, ran: set[str]) -> list[str]:
    """Modules with parameters of which nothing ran, whose parent did run (outermost only)."""
    out = []
    for name, m in backbone.named_modules():
        parent = name.rpartition(".")[0]
        if name and name not in ran and (not parent or parent in ran) \
                and any(True for _ in m.parameters()):
            out.append(name)
    return out


def layer_usage(place: PlaceDescriptor) -> dict:
    """Which backbone modules produce ``place``'s descriptor (one pass on a blank image).

    Returns ``stages`` (the spiking stages that ran, named by their LIF's parent module),
    ``input_params`` / ``spiking_params`` (parameter names of modules that ran before / after the
    first spiking neuron fired: real-valued input vs spike-driven) and ``not_run``.
    """
    s = place.settings
    bb = place.backbone
    order = _ran_modules(bb, torch.zeros(1, s.in_chans, *s.img_size), place.eval())
    mods = dict(bb.named_modules())
    lifs = [n for n in order if isinstance(mods[n], neuron.BaseNode)]
    first_lif = order.index(lifs[0]) if lifs else len(order)
    params = {i: [f"{n}.{p}" for p, _ in mods[n].named_parameters(recurse=False)]
              for i, n in enumerate(order)}
    return {"stages": [n.rpartition(".")[0] for n in lifs],
            "input_params": sorted({p for i, ps in params.items() if i < first_lif for p in ps}),
            "spiking_params": sorted({p for i, ps in params.items() if i > first_lif
                                      for p in ps}),
            "not_run": _outermost_unused(bb, _with_parents(order))}


def parameter_split(place: PlaceDescriptor, usage: dict) -> dict:
    """Count the parameters that make the descriptor, by kind, and all in the file.

    nn.Parameters only (BatchNorm running statistics are buffers that fold into the conv).
    """
    p = dict(place.backbone.named_parameters())
    n_in = sum(p[k].numel() for k in usage["input_params"])
    n_sp = sum(p[k].numel() for k in usage["spiking_params"])
    w = place.whitening
    n_proj = int(w.proj.numel()) if w is not None else 0
    n_mean = int(w.mean.numel()) if w is not None else 0
    used = n_in + n_sp + n_proj + n_mean
    backbone = sum(t.numel() for t in p.values())
    return {"input_layer": n_in, "spiking": n_sp, "whitening_proj": n_proj,
            "whitening_mean": n_mean, "descriptor_total": used, "backbone_total": backbone,
            "file_total": backbone + n_proj + n_mean,
            "whitening_shape": list(w.proj.shape) if w is not None else None}


def _stage_text(place: PlaceDescriptor, name: str) -> str:
    m = place.backbone.get_submodule(name)
    conv = next(c for c in m.modules() if isinstance(c, nn.Conv2d))
    pool = " + max-pool 2x2" if any(isinstance(c, nn.MaxPool2d) for c in m.modules()) else ""
    return (f"`{name}` ({type(m).__name__}: conv {conv.kernel_size[0]}x{conv.kernel_size[1]} "
            f"{conv.in_channels}->{conv.out_channels} + BN + LIF{pool})")


def _pct(n: int, total: int) -> str:
    return f"{n:,} ({100 * n / total:.3f} %)"


def layers_section(place: PlaceDescriptor, usage: dict, split: dict) -> str:
    """Markdown: which layers make the descriptor, what is not run, and the parameter split."""
    stages = ", ".join(_stage_text(place, n) for n in usage["stages"])
    total = split["descriptor_total"]
    shape = "x".join(str(d) for d in split["whitening_shape"] or [0])
    lines = [
        "## Which layers produce the descriptor", "",
        f"Mode `{place.settings.mode}`: {stages}; their spikes are averaged over T="
        f"{place.backbone.config.T} steps, flattened ({place.raw_dim}-d), then the whitening "
        f"(subtract the {split['whitening_mean']:,}-d mean, project with {shape}) and L2 "
        f"normalisation give the {place.dim}-d descriptor.",
        "Not run for the descriptor: " + ", ".join(f"`{n}`" for n in usage["not_run"])
        + (" (the attention block `blocks` and the heads stay in the file for training)."
           if "blocks" in usage["not_run"] else "."), "",
        "| parameters used at inference | count (% of descriptor) |", "|---|---|",
        f"| real-valued input layer (first conv + BN, sees pixels) | "
        f"{_pct(split['input_layer'], total)} |",
        f"| spike-driven conv weights (conv + BN fed by spikes) | "
        f"{_pct(split['spiking'], total)} |",
        f"| whitening projection {shape} + mean (non-spiking, reads spike rates) | "
        f"{_pct(split['whitening_proj'] + split['whitening_mean'], total)} |",
        f"| **descriptor total** | {total:,} (100 %) |", "",
        f"Parameters in the file: {split['file_total']:,} (backbone {split['backbone_total']:,} "
        f"+ whitening); the descriptor uses {total:,} "
        f"({100 * total / split['file_total']:.1f} %). Counted as dense layers, "
        f"{100 * split['spiking'] / total:.3f} % of the weights used are spike-driven; on "
        "spiking hardware the whitening is also driven by spikes (it reads spike rates, so it "
        "costs one accumulate per output per input spike), which leaves only the first conv "
        f"({split['input_layer']:,} parameters) real-valued.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- energy, results
def energy_section(energy: dict, packaged_hash: str) -> str:
    """Markdown: energy per query, dense and spiking-hardware count, vs both teachers."""
    s, clip, pt = energy["student"], energy["teacher"], energy.get("place_teacher", {})
    proj = s.get("rate_projection") or {"dense_macs": 0, "macs": 0, "acs": 0}
    t_e, c_e = pt.get("energy_mj"), clip["energy_mj"]

    def row(name: str, count: str, macs: float, acs: float | None, e: float,
            vs: tuple[bool, bool] = (True, True)) -> str:
        vs_t = f"{100 * e / t_e:.2f} %" if t_e and vs[0] else "–"
        vs_c = f"{100 * e / c_e:.4f} %" if vs[1] else "–"
        return (f"| {name} | {count} | {macs:.3e} | " + ("–" if acs is None else f"{acs:.3e}")
                + f" | {e:.5f} | {vs_t} | {vs_c} |")
    rows = [row("vl2spike (these weights)", "dense: whitening as MACs", s["macs"], s["sops"],
                s["energy_mj"]),
            row("vl2spike (these weights)", "spiking hardware: whitening as ACs per spike",
                s["macs"] - proj["dense_macs"] + proj["macs"], s["sops"] + proj["acs"],
                s["energy_mj_spiking_hw"])]
    if t_e:
        rows.append(row("place-CNN teacher it was distilled from", "dense", pt["macs"], None,
                        t_e, (False, True)))
    rows.append(row(CLIP_NAME, "dense (architecture only)", clip["macs"], None, c_e,
                    (False, False)))
    warn = ("" if energy.get("weights_hash") == packaged_hash else
            f"\n**Note:** {ENERGY_JSON} measured weights `{energy.get('weights_hash')}`, not "
            f"these (`{packaged_hash}`); re-run `vl2spike energy`.\n")
    return ("## Energy per query (45 nm: E_MAC 4.6 pJ, E_AC 0.9 pJ)\n\n"
            f"From `{ENERGY_JSON}` ({energy['data']['num_images']} images from "
            f"{energy['data']['source']}; per image = per query).\n\n"
            "| model | count | MACs | ACs (SOPs) | mJ/query | vs place-CNN teacher | "
            "vs CLIP ViT-B/32 |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
            + warn)


def _result_rows(bench: dict) -> list[str]:
    """Markdown table rows of the held-out results, one per method."""
    rows = []
    for name, m in bench["methods"].items():
        if "skipped" in m:
            rows.append(f"| {name} | skipped: {m['skipped']} | | | |")
            continue
        e = m.get("energy_mj_per_query")
        rows.append(f"| {name} | {m['summer_to_winter']['tol1']['r1']:.1f} | "
                    f"{m['winter_to_summer']['tol1']['r1']:.1f} | {m['queries_per_s']:.0f} | "
                    + ("n/a" if not e else
                       f"{e:.4f} / {m.get('energy_mj_per_query_spiking_hw', e):.4f}") + " |")
    return rows


def _target_lines(t: dict) -> list[str]:
    """One bullet per generalisation target (met / not met, with its numbers)."""
    def mark(ok: bool) -> str:
        return "met" if ok else "**not met**"
    out = []
    if "vs_hog_same_post" in t:
        v = t["vs_hog_same_post"]
        out.append(f"- mean R@1 vs HOG + the same whitening: {v['packaged_mean']:.1f} vs "
                   f"{v['hog_same_post_mean']:.1f} (margin {v['margin']:+.1f}, target "
                   f"+{t['margin_over_hog_same_post']:.1f}): {mark(v['met'])}")
    if "beats_plain_hog_every_set" in t:
        v = t["beats_plain_hog_every_set"]
        margins = ", ".join(f"{k} {m:+.1f}" for k, m in v["margins"].items())
        out.append(f"- beats plain HOG on every set ({margins}): {mark(v['met'])}")
    if "distilled_vs_control" in t:
        v = t["distilled_vs_control"]
        d = v.get("diff_mean") or {}
        out.append("- distilled - equal-budget control, mean R@1: "
                   + (f"{d['mean']:+.1f}" if d else "n/a")
                   + f" over {v['paired_seeds']} paired seed(s) (target >= "
                   f"+{t['distill_margin']:.1f} over >= {t['min_seeds']} seeds): "
                   f"{mark(v['met'])}")
    if "energy_vs_teacher" in t:
        v = t["energy_vs_teacher"]
        out.append(f"- energy vs the place-CNN teacher on the Nordland queries: spiking-hardware "
                   f"count {100 * v['ratio_spiking_hw']:.2f} %, dense {100 * v['ratio_dense']:.2f}"
                   f" % (target <= {100 * t['energy_ratio']:.0f} %): {mark(v['met'])}")
    if "speed_met" in t:
        out.append(f"- >= {t['min_queries_per_s']} queries/s: {mark(t['speed_met'])}")
    return out


def generalisation_section(bench: dict) -> str:
    """Markdown: R@1 on places never seen (four sets) and the generalisation targets."""
    gen = bench.get("generalisation")
    if not gen:
        return "## Generalisation\n\nNot in the bench results (run without --no-crossdomain).\n"
    tols = ", ".join(f"{k} +-{v['tolerance']}" for k, v in gen["sets"].items())
    return ("## Generalisation: R@1 % on places never seen (single frame)\n\n"
            f"Frame tolerances: {tols}. Mean = {gen['mean_definition']}.\n\n"
            + generalisation.markdown(gen, bench["methods"])
            + f"\nTargets for `{gen['targets'].get('packaged')}`:\n\n"
            + "\n".join(_target_lines(gen["targets"])) + "\n")


# ----------------------------------------------------------------------------- the card
def _descriptor_text(mode: str, cfg: dict) -> str:
    if mode.startswith("stem"):
        return (f"spike rates (mean over T) after the first {mode[4:]} spiking conv stages of the "
                "stem, flattened and L2-normalised (the attention block is not run)")
    if mode == "spatial":
        return (f"spike-rate tokens on the {cfg['img_size'][0] // cfg['patch_size']}x"
                f"{cfg['img_size'][1] // cfg['patch_size']} grid, each through the model's "
                f"descriptor head ({cfg['descriptor_dim']}-d), flattened and L2-normalised")
    return "the pooled descriptor head output, L2-normalised"


def _whitening_text(info: dict) -> str:
    w = info.get("vpr", {}).get("whitening")
    if not w:
        return "(no whitening)"
    return (f"then a learned whitening to {w['dim']}-d (closed form, fitted on "
            f"{w['fitted_on_places']} training places, shrink {w['shrink']}; validation R@1 "
            f"{w['val_r1_raw']} -> {w['val_r1_whitened']})")


def _teacher_text(info: dict) -> str:
    """Describe the teacher: its current file hash and the one recorded at distillation."""
    t = info.get("teacher")
    if not isinstance(t, dict) or not t.get("path"):
        return str(t)
    recorded = t.get("sha256_16")
    path = Path(t["path"])
    now = weights_hash(path) if path.is_file() else None
    text = f"{t.get('kind', '')}; file `{path}`, sha256[:16] `{now or 'file not found'}`"
    if recorded and now and recorded != now:
        text += (f" (at distillation `{recorded}`: the file was re-saved since; "
                 f"`git log {path}` says why)")
    return text


def _header(wpath: Path, meta: dict, row: str, bench: dict) -> str:
    """Markdown: what the weights are, how they were made, and where they come from."""
    settings = settings_from_meta(meta, str(config_path_for(wpath)))
    info, cfg = meta["metadata"], meta["config"]
    hist = info.get("history", [])
    commit = _commit()
    return f"""# vpr_default: Spikformer place-recognition weights (`{info.get('name')}`)

- Selected as the default: {info.get('selected_as_default') or 'n/a'} (held-out row: `{row}`)
- File: `{wpath.name}` ({wpath.stat().st_size / 1e6:.2f} MB), sha256[:16] `{weights_hash(wpath)}`
- Architecture: `{cfg['name']}` (Spikformer, spikingjelly 2.0.0 LIF), \
input {cfg['in_chans']}x{cfg['img_size'][0]}x{cfg['img_size'][1]} grey,
  patch {cfg['patch_size']}, embed {cfg['embed_dim']}, depth {cfg['depth']}, \
heads {cfg['num_heads']}, T={cfg['T']}
- Place descriptor: `{settings.mode}` = {_descriptor_text(settings.mode, cfg)}
  {_whitening_text(info)}; the final descriptor is \
{bench['methods'][row]['descriptor_dim']}-d, cosine / inner-product matching.
- Preprocessing: INTER_AREA resize to 64x32, grey, standardisation
  `{settings.input_norm}` (`vl2spike_ros.vpr.descriptors.prepare_image`).
- Data: {info.get('data', {})}
- Loss: {info.get('loss')}
- Teacher: {_teacher_text(info)}
- Warm start: {info.get('init_from', 'none (random init)')}; SVS weights: {info.get('svs_weights')}
- Training config: {info.get('train_config')}; {info.get('train_seconds')} s on a shared 2-core CPU
  (1 torch thread, niced). Last epoch: {hist[-1] if hist else 'n/a'}
- Rebuild from scratch: `make weights` (= `vl2spike vpr train all`: teacher, direct student,
  equal-budget control, distilled student, default chosen on validation places; resumes from
  `bench/weights/ckpt/`; then the benchmark and this card).
- Card written from `{BENCH_JSON}` and `{ENERGY_JSON}` \
(`python -m vl2spike_ros.bench.model_card`){f' at commit {commit}' if commit else ''}.
"""


def write_model_card(path: str | Path, bench: dict, weights: str | Path,
                     energy: dict | None = None) -> None:
    """Write the card for the default ``weights`` from their JSON and the bench results.

    ``energy``: the ``vl2spike energy`` report (default: :data:`ENERGY_JSON` when present).
    """
    row = method_of(bench, weights)
    wpath = Path(weights)
    if energy is None and ENERGY_JSON.is_file():
        energy = _read_json(ENERGY_JSON)
    place = load_place_descriptor(wpath)
    usage = layer_usage(place)
    text = (_header(wpath, read_model_meta(wpath), row, bench) + "\n"
            + layers_section(place, usage, parameter_split(place, usage)) + "\n"
            + (energy_section(energy, weights_hash(wpath)) + "\n" if energy else "")
            + "## Held-out results (Nordland, last 40 % of places, R@1 % at +-1 frame)\n\n"
            "| method | summer->winter | winter->summer | queries/s | mJ/query dense / "
            "spiking-hw |\n|---|---|---|---|---|\n" + "\n".join(_result_rows(bench)) + "\n\n"
            f"Targets: `{json.dumps(bench.get('targets', {}))}`\n\n"
            + generalisation_section(bench) + "\n"
            "Limitations: trained on one railway route at 64x32 px; expect lower recall on "
            "other\ndomains without retraining (see the generalisation table). Energy is the "
            "standard 45 nm estimate\n(E_MAC 4.6 pJ, E_AC 0.9 pJ).\n")
    write_bytes_atomic(path, text.encode())


def _read_json(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found")
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None


def card_from_json(out: str | Path, bench_json: str | Path = BENCH_JSON,
                   energy_json: str | Path | None = None,
                   weights: str | Path | None = None) -> None:
    """Regenerate the card from committed results (no benchmark run).

    ``energy_json=None``: :data:`ENERGY_JSON` when present, else no energy section.
    """
    energy = _read_json(energy_json) if energy_json else None
    write_model_card(out, _read_json(bench_json), weights or default_vpr_weights(), energy)


def main(argv: list[str] | None = None) -> int:
    """``python -m vl2spike_ros.bench.model_card``: rewrite the card from the JSON results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench-json", default=str(BENCH_JSON), help="`vl2spike bench vpr` results")
    p.add_argument("--energy-json", default=str(ENERGY_JSON), help="`vl2spike energy` report")
    p.add_argument("--weights", default=None, help="default: the packaged VPR weights")
    p.add_argument("--out", default=None,
                   help="card path (default: the weights path with .md)")
    ns = p.parse_args(argv)
    weights = Path(ns.weights) if ns.weights else default_vpr_weights()
    out = Path(ns.out) if ns.out else weights.with_suffix(".md")
    card_from_json(out, ns.bench_json, ns.energy_json, weights)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
