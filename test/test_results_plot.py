"""PNG plots of the own_route / accept / neuromorphic results, drawn from minimal result dicts."""
from __future__ import annotations

import json

import pytest

from vl2spike_ros.bench.results_plot import (plot_acceptance, plot_neuromorphic, plot_own_route,
                                             png_path, replot)
from vl2spike_ros.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _point(margin: float, precision: float | None, recall: float, accepted: int = 30) -> dict:
    return {"margin": margin, "accepted": accepted, "precision": precision, "recall": recall,
            "precision_wilson_lower": (precision or 0.0) - 5}


OWN_ROUTE = {"sets": {"a": {"tolerance": 2, "ref_frames": 10,
                            "default": {"r1": 40.0}, "label_free": {"r1": 50.0}},
                      "b": {"tolerance": 0, "ref_frames": 12,
                            "default": {"r1": 8.0}, "label_free": {"r1": 10.0}}}}
ACCEPT = {"protocol": {"target_precision": 0.95}, "chosen_margin": 0.01,
          "validation_sweep_single_frame": [_point(0.0, 90.0, 62.0), _point(0.01, 97.0, 61.0),
                                            _point(0.2, None, 0.0, accepted=0)],
          "held_out_check": {"single_frame": _point(0.01, 96.0, 38.0)},
          "crossdomain_check": {"gardens_point": {"single_frame": _point(0.01, 57.0, 21.0),
                                                  "single_frame_larger_margins":
                                                      [_point(0.05, 70.0, 13.0)]},
                                "essex3in1": {"skipped": "not found"}},
          "off_map_check": {"margin_0.01": {"accepted_percent": 18.0},
                            "margin_0.2": {"accepted_percent": 1.0}}}
_RECALL = {"summer_to_winter": {"r1": 38.5}, "winter_to_summer": {"r1": 40.4}}
NEURO = {"frames_per_season": 5, "split": "Nordland held-out",
         "methods": {k: {"recall": _RECALL} for k in ("packaged", "exported", "int8", "norse")}}


@pytest.mark.parametrize("plot, res", [(plot_own_route, OWN_ROUTE), (plot_acceptance, ACCEPT),
                                       (plot_neuromorphic, NEURO)],
                         ids=["own_route", "accept", "neuromorphic"])
def test_plot_writes_a_png(tmp_path, plot, res):
    out = tmp_path / "x.png"
    plot(res, out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp file left behind


def test_plot_only_redraws_the_png_next_to_the_json(tmp_path):
    js = tmp_path / "own_route.json"
    js.write_text(json.dumps(OWN_ROUTE))
    assert main(["bench", "own_route", "--plot-only", "--json", str(js)]) == 0
    assert png_path(js).read_bytes().startswith(PNG_MAGIC)


def test_replot_names_a_missing_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        replot("accept", tmp_path / "missing.json")
