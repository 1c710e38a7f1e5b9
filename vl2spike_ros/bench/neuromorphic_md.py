"""Markdown tables of ``vl2spike bench neuromorphic`` results (helper of bench/neuromorphic)."""
from __future__ import annotations

S2W, W2S = "summer_to_winter", "winter_to_summer"
ROWS = ("packaged", "exported", "norse", "snntorch", "int8", "iaf", "int8-iaf", "int8-iaf_norse")


def _r(m: dict, d: str, k: str) -> str:
    return f"{m['recall'][d][k]:.1f}"


def _out_rate(m: dict) -> str:
    return f"{list(m['rates'].values())[-1]:.3f}" if m["rates"] else "–"


def _methods_table(res: dict) -> list[str]:
    lines = ["| computation | S→W R@1 | W→S R@1 | S→W R@5 | W→S R@5 | output firing rate |",
             "|---|---|---|---|---|---|"]
    for key in ROWS:
        m = res["methods"].get(key)
        if m:
            lines.append(f"| {m['label']} | {_r(m, S2W, 'r1')} | {_r(m, W2S, 'r1')} | "
                         f"{_r(m, S2W, 'r5')} | {_r(m, W2S, 'r5')} | {_out_rate(m)} |")
    return lines


def _delta(c: dict) -> str:
    d = c["recall_delta_points"]
    return f"{d[S2W]['r1']:+.2f} / {d[W2S]['r1']:+.2f}"


def _equivalence_table(res: dict) -> list[str]:
    lines = ["| NIR file in | vs spikingjelly run of | frames with cos ≥ 0.99 | cos min / mean | "
             "output spike counts differing (fraction) | ΔR@1 S→W / W→S | met |",
             "|---|---|---|---|---|---|---|"]
    ref = {"int8-iaf_norse": "int8 + IAF network"}
    for key, c in res["equivalence"].items():
        sim = "norse (int8 + IAF export)" if key == "int8-iaf_norse" else key
        ok = c["frames"] - c["frames_below_target"]
        lines.append(f"| {sim} | {ref.get(key, 'exported network')} | {ok}/{c['frames']} | "
                     f"{c['cos_min']:.4f} / {c['cos_mean']:.5f} | "
                     f"{c.get('output_count_mismatch_fraction', 0):.2g} | {_delta(c)} | "
                     f"{'yes' if c['met'] else 'NO'} |")
    return lines


def costs_table(res: dict) -> list[str]:
    """Markdown lines: recall and cosine change of each model change in ``res["costs"]``."""
    names = {"spike_or_vs_packaged": "max-pool moved after the neuron (spike OR) vs packaged",
             "int8_vs_exported": "int8 weights vs exported float",
             "iaf_vs_exported": "IAF (no leak) vs exported LIF",
             "int8-iaf_vs_exported": "int8 + IAF vs exported float LIF"}
    lines = ["| change | ΔR@1 S→W / W→S (points) | cos min / mean |", "|---|---|---|"]
    for key, label in names.items():
        c = res["costs"].get(key)
        if c:
            lines.append(f"| {label} | {_delta(c)} | {c['cos_min']:.3f} / {c['cos_mean']:.3f} |")
    return lines


def hardware_table(hw: dict) -> list[str]:
    """Markdown lines: per-layer counts and the chip fits of a hardware report."""
    lines = ["| layer | neurons | synapses | max fan-in | int8 bytes | Speck kernel / neuron "
             "memory |", "|---|---|---|---|---|---|"]
    for lc in hw["layers"]:
        shape = "x".join(map(str, lc["neuron_shape"]))
        lines.append(f"| {lc['name']} ({lc['kind']}, {shape}) | {lc['neurons']:,} | "
                     f"{lc['synapses']:,} | {lc['max_fan_in']} | {lc['int8_bytes']:,} | "
                     f"{lc['speck_kernel_memory']:,} / {lc['speck_neuron_memory']:,} |")
    t = hw["totals"]
    lines.append(f"| total | {t['neurons']:,} | {t['synapses']:,} | | {t['int8_bytes']:,} | |")
    sp, xy = hw["speck"], hw["xylo"]
    lines += ["", f"- **{sp['chip']}**: memory {'fits' if sp['memory_fits'] else 'does NOT fit'}"
              f" ({sp['cores_used']} of {sp['cores_available']} cores, cores {sp['cores']}); "
              f"source: {sp['source']}. Conditions memory does not cover:"]
    lines += [f"  - {c}" for c in sp["conditions"]]
    lines.append(f"- **{xy['chip']}**: {'fits' if xy['fits'] else 'does NOT fit'}: "
                 f"{xy['inputs']:,} inputs (max {xy['max_inputs']}), {xy['hidden_neurons']:,} "
                 f"hidden neurons (max {xy['max_hidden_neurons']}), {xy['output_neurons']:,} "
                 f"outputs (max {xy['max_output_neurons']}); source: {xy['source']}")
    return lines


def format_markdown(res: dict) -> str:
    """Format the results as markdown: recall, equivalence, costs, hardware."""
    t = res["targets"]
    head = ["# Neuromorphic export (`vl2spike bench neuromorphic`)", "",
            f"Weights: {res['weights']} (`{res['weights_sha256_16']}`); "
            f"{res['frames_per_season']} frames per season, {res['split']}; {res['recall']}; "
            f"T = {res['time_steps']} steps of {res['dt_s']} s in NIR; "
            f"{res['conditions']['threads']} torch thread(s), "
            f"{res['conditions']['seconds']:.0f} s.", "",
            "Exported network = the packaged spiking stem with: "
            + ("; ".join(res["approximations"]) or "no change") + ".", ""]
    return "\n".join(
        head + ["## Recall", ""] + _methods_table(res)
        + ["", f"## Equivalence (targets: cos ≥ {t['cos_per_frame']} on every frame, R@1 within "
           f"{t['recall_within_points']} points; all met: {'yes' if t['met'] else 'NO'})", ""]
        + _equivalence_table(res) + ["", "## Cost of each change", ""] + costs_table(res)
        + ["", "## Hardware (exported network)", ""] + hardware_table(res["hardware"])) + "\n"
