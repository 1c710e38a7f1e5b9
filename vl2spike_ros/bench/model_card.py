"""Model card (markdown) for the packaged default VPR weights, from their JSON + bench results."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vl2spike_ros.atomic import write_bytes_atomic


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def method_of(bench: dict, weights: str | Path) -> str:
    """Name of the benchmarked method whose weights file is byte-identical to ``weights``."""
    from vl2spike_ros.models import weights_hash

    h = weights_hash(weights)
    for name, m in bench["methods"].items():
        if m.get("model", {}).get("weights_hash") == h:
            return name
    raise ValueError(f"{weights} is not among the benchmarked weights")


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


def _result_rows(bench: dict) -> list[str]:
    """Markdown table rows of the held-out results, one per method."""
    rows = []
    for name, m in bench["methods"].items():
        if "skipped" in m:
            rows.append(f"| {name} | skipped: {m['skipped']} | | | |")
            continue
        rows.append(f"| {name} | {m['summer_to_winter']['tol1']['r1']:.1f} | "
                    f"{m['winter_to_summer']['tol1']['r1']:.1f} | {m['queries_per_s']:.0f} | "
                    + (f"{m['energy_mj_per_query']:.4f}" if m.get("energy_mj_per_query")
                       else "n/a")
                    + " |")
    return rows


def write_model_card(path: str | Path, bench: dict, weights: str | Path) -> None:
    """Write the card for the default ``weights`` from their JSON and the bench results."""
    row = method_of(bench, weights)
    v = bench["methods"][row]
    from vl2spike_ros.models import config_path_for, read_model_meta
    from vl2spike_ros.vpr.place import settings_from_meta

    wpath = Path(weights)
    meta = read_model_meta(wpath)
    settings = settings_from_meta(meta, str(config_path_for(wpath)))
    info = meta["metadata"]
    cfg = meta["config"]
    hist = info.get("history", [])
    rows = _result_rows(bench)
    sel = info.get("selected_as_default", {})
    text = f"""# vpr_default: Spikformer place-recognition weights (`{info.get('name')}`)

- Selected as the default: {sel or 'n/a'} (held-out row: `{row}`)

- File: `{wpath.name}` ({wpath.stat().st_size / 1e6:.2f} MB), \
sha256[:16] `{meta.get('weights_sha256_16')}`
- Architecture: `{cfg['name']}` (Spikformer, spikingjelly 2.0.0 LIF), \
input {cfg['in_chans']}x{cfg['img_size'][0]}x{cfg['img_size'][1]} grey,
  patch {cfg['patch_size']}, embed {cfg['embed_dim']}, depth {cfg['depth']}, \
heads {cfg['num_heads']}, T={cfg['T']}
- Place descriptor: `{settings.mode}` = {_descriptor_text(settings.mode, cfg)}
  {_whitening_text(info)}; the final descriptor is {v['descriptor_dim']}-d, \
cosine / inner-product matching.
- Preprocessing: INTER_AREA resize to 64x32, grey, standardisation
  `{settings.input_norm}` (`vl2spike_ros.vpr.descriptors.prepare_image`).
- Data: {info.get('data', {})}
- Loss: {info.get('loss')}
- Teacher: {info.get('teacher')}
- Warm start: {info.get('init_from', 'none (random init)')}; SVS weights: {info.get('svs_weights')}
- Training config: {info.get('train_config')}; {info.get('train_seconds')} s on a shared 2-core CPU
  (1 torch thread, niced). Last epoch: {hist[-1] if hist else 'n/a'}
- Rebuild from scratch: `make weights` (= `vl2spike vpr train all`: teacher, direct student,
  equal-budget control, distilled student, default chosen on validation places; resumes from
  `bench/weights/ckpt/`; then the benchmark and this card).
- Code commit at evaluation: {_commit()}

## Held-out results (Nordland, last 40 % of places, R@1 % at +-1 frame)

| method | summer->winter | winter->summer | queries/s | energy mJ/query |
|---|---|---|---|---|
{chr(10).join(rows)}

Targets: `{json.dumps(bench.get('targets', {}))}`

Limitations: trained on one railway route at 64x32 px; expect lower recall on other
domains without retraining. Energy is the standard 45 nm estimate (E_MAC 4.6 pJ, E_AC 0.9 pJ).
"""
    write_bytes_atomic(path, text.encode())
