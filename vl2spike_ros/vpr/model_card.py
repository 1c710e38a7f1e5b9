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


def write_model_card(path: str | Path, bench: dict) -> None:
    """Write the card for ``bench['methods']['vl2spike']`` (weights JSON read next to them)."""
    v = bench["methods"]["vl2spike"]
    wpath = Path(v["weights"])
    meta = json.loads(wpath.with_suffix(".json").read_text())
    info = meta.get("metadata", {})
    cfg = meta["config"]
    hist = info.get("history", [])
    rows = []
    for name, m in bench["methods"].items():
        if "skipped" in m:
            rows.append(f"| {name} | skipped: {m['skipped']} | | | |")
            continue
        rows.append(f"| {name} | {m['summer_to_winter']['tol1']['r1']:.1f} | "
                    f"{m['winter_to_summer']['tol1']['r1']:.1f} | {m['queries_per_s']:.0f} | "
                    + (f"{m['energy_mj_per_query']:.4f}" if m.get("energy_mj_per_query") else "n/a")
                    + " |")
    text = f"""# vpr_default: Spikformer place-recognition weights (VL2Spike distilled)

- File: `{wpath.name}` ({wpath.stat().st_size / 1e6:.2f} MB), sha256[:16] `{meta.get('weights_sha256_16')}`
- Architecture: `{cfg['name']}` (Spikformer, spikingjelly 2.0.0 LIF), input {cfg['in_chans']}x{cfg['img_size'][0]}x{cfg['img_size'][1]} grey,
  patch {cfg['patch_size']}, embed {cfg['embed_dim']}, depth {cfg['depth']}, heads {cfg['num_heads']}, T={cfg['T']}
- Place descriptor: `{info.get('vpr', {}).get('descriptor', 'pooled')}` = spike-rate tokens on the
  {cfg['img_size'][0] // cfg['patch_size']}x{cfg['img_size'][1] // cfg['patch_size']} grid, each through the model's descriptor head
  ({cfg['descriptor_dim']}-d, L2-normalised), flattened: {v['descriptor_dim']}-d, cosine / inner-product matching.
- Preprocessing: INTER_AREA resize to 64x32, grey, per-image zero mean / unit std
  (`vl2spike_ros.vpr.descriptors.prepare_image`).
- Data: {info.get('data', {})}
- Loss: {info.get('loss')}
- Teacher: {info.get('teacher')}
- Warm start: {info.get('init_from', 'none (random init)')}; SVS weights: {info.get('svs_weights')}
- Training config: {info.get('train_config')}; {info.get('train_seconds')} s on a shared 2-core CPU
  (1 torch thread, niced). Last epoch: {hist[-1] if hist else 'n/a'}
- Rebuild from scratch: `vl2spike vpr train all` (teacher, direct student, distilled student;
  resumes from `bench/weights/ckpt/`), then `make bench-vpr`.
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
