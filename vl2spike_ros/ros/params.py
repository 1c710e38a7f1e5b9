"""Parameters of the place-recognition node, declared once (no rclpy import).

:data:`PARAM_SPECS` is the single declaration table: :mod:`vl2spike_ros.ros.node` turns each
:class:`ParamSpec` into an rclpy ``ParameterDescriptor`` (description, integer / floating point
range, read-only flag), the tests check ``config/vpr_node.yaml`` and the launch files against
it, and :func:`render_markdown_table` generates the README / ``docs/node_api.md`` table from it.

``python -m vl2spike_ros.ros.params`` prints that table (``--yaml`` prints a params file).
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping

from vl2spike_ros.io.decode import DEFAULT_MAX_PIXELS
from vl2spike_ros.vpr.acceptance import DEFAULT_MATCH_MARGIN, NEIGHBOURHOOD
from vl2spike_ros.vpr.matching import (DEFAULT_MATCH_THRESHOLD, DEFAULT_SEQUENCE_VELOCITIES,
                                       MAX_VELOCITY, parse_velocities)

NODE_NAME = "vpr_node"
# Key of the node's section in params files: matches the node in any namespace (a plain
# ``vpr_node:`` key is silently skipped once the node runs under ``-r __ns:=/robot1``).
PARAMS_FILE_KEY = f"/**/{NODE_NAME}"
TYPES = ("string", "bool", "integer", "double")
DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
POSE_TYPES = ("odometry", "pose_stamped", "pose_with_covariance", "navsatfix")
# when a changed value takes effect: at once, on the next lifecycle configure / activate
# transition, on the reload_map service (or configure), or only at startup (read-only)
APPLIES = {"live": "immediately", "configure": "next configure", "activate": "next activate",
           "reload": "reload_map service / next configure", "startup": "startup only (read-only)"}


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter. ``range`` is ``(min, max)`` for integer/double, inclusive."""

    name: str
    type: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    applies: str = "live"
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"parameter {self.name}: unknown type {self.type!r}")
        if self.applies not in APPLIES:
            raise ValueError(f"parameter {self.name}: unknown applies {self.applies!r}")

    @property
    def read_only(self) -> bool:
        """Only startup parameters are read-only; the others can be set at any time."""
        return self.applies == "startup"

    @property
    def constraints(self) -> str:
        """Human-readable constraint text (also the descriptor's ``additional_constraints``)."""
        if self.range is not None:
            return f"{self.range[0]} .. {self.range[1]}"
        if self.choices:
            return ", ".join(self.choices)
        if self.name == "device":
            return "cpu, cuda, cuda:N, mps"
        if self.name == "sequence_velocities":
            return f"v, v1,v2,... or MIN:MAX:N; each in (0, {MAX_VELOCITY:g}]"
        return ""


PARAM_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("weights", "string", "",
              "Student weights (.safetensors). Empty: the packaged default VPR weights.",
              applies="configure"),
    ParamSpec("map_dir", "string", "",
              "Place map folder (FAISS index + JSON metadata). Must match the weights. Empty "
              "only in mapping mode (starts an empty map).", applies="reload"),
    ParamSpec("image_topic", "string", "image",
              "Input topic (remappable). sensor_msgs/Image, or sensor_msgs/CompressedImage "
              "when compressed_input is true.", applies="activate"),
    ParamSpec("compressed_input", "bool", False,
              "Subscribe to sensor_msgs/CompressedImage (JPEG/PNG) instead of sensor_msgs/Image.",
              applies="activate"),
    ParamSpec("max_image_pixels", "integer", DEFAULT_MAX_PIXELS,
              "Frames above this many pixels (width x height, read from the header before "
              "decoding) are refused and counted as bad frames. Default 4096 x 4096.",
              range=(1, 1 << 30)),
    ParamSpec("top_k", "integer", 5, "Number of candidate places published per frame.",
              range=(1, 100)),
    ParamSpec("match_threshold", "double", DEFAULT_MATCH_THRESHOLD,
              "Cosine floor for accepting the best match (the acceptance rule's other part is "
              "match_margin).", range=(-1.0, 1.0)),
    ParamSpec("match_margin", "double", DEFAULT_MATCH_MARGIN,
              "Acceptance rule: a match is accepted (flag bit 1, vpr/match_pose published) when "
              "the 5-frame sequence evidence and the single frame agree on the place (within "
              f"+-{NEIGHBOURHOOD} places) and the evidence's best score beats every place "
              f"outside +-{NEIGHBOURHOOD} by at least this margin. The default reached 95 % "
              "precision on Nordland validation places (README).", range=(0.0, 1.0)),
    ParamSpec("sequence_length", "integer", 1,
              "Frames fused by the sequence matcher (1 = single-frame matching).",
              range=(1, 100), applies="configure"),
    ParamSpec("sequence_velocities", "string", DEFAULT_SEQUENCE_VELOCITIES,
              "Velocities (map places per frame) searched by sequence matching and the "
              "acceptance evidence: 1 = live run as fast as the mapping run; 0.5 = a map built "
              "at stride 2; 0.5:2:7 = unknown speed between half and twice. A string: quote it "
              "(sequence_velocities:=\"'0.5'\").",
              applies="configure"),
    ParamSpec("device", "string", "cpu", "Torch device for inference.", applies="configure"),
    ParamSpec("num_threads", "integer", 1,
              "Torch CPU threads for inference (0 = torch default).", range=(0, 64),
              applies="configure"),
    ParamSpec("map_frame_id", "string", "map", "frame_id of published poses and candidates."),
    ParamSpec("max_rate_hz", "double", 0.0,
              "Maximum processing rate; frames above it are dropped (0 = as fast as possible).",
              range=(0.0, 1000.0)),
    ParamSpec("mapping_mode", "bool", False,
              "Add processed frames to the map as new places (also set by the set_mapping_mode "
              "service)."),
    ParamSpec("mapping_stride", "integer", 1,
              "In mapping mode, add every N-th processed frame.", range=(1, 10000)),
    ParamSpec("pose_topic", "string", "",
              "Pose source for new places in mapping mode (empty = places without pose).",
              applies="activate"),
    ParamSpec("pose_type", "string", "odometry",
              "Message type on pose_topic. navsatfix: sensor_msgs/NavSatFix, stored as "
              "east/north/up metres from the map's geodetic origin (the first mapped fix when "
              "the map has none), as vl2spike map build does for NavSatFix bags.",
              applies="activate", choices=POSE_TYPES),
    ParamSpec("save_map_dir", "string", "",
              "Folder written by the save_map service (empty = map_dir)."),
    ParamSpec("position_variance", "double", 1.0,
              "Position variance (m^2) at confidence 1; published covariance is this / "
              "confidence^2, confidence = validation precision at the match's margin (1 for "
              "weights without a calibration).", range=(1e-6, 1e6)),
    ParamSpec("orientation_variance", "double", 0.1,
              "Orientation variance (rad^2) at confidence 1, scaled like position_variance.",
              range=(1e-6, 1e6)),
    ParamSpec("publish_markers", "bool", False,
              "Also publish candidates as visualization_msgs/MarkerArray for RViz.",
              applies="configure"),
    ParamSpec("diagnostics_period_s", "double", 1.0, "Period of /diagnostics messages.",
              range=(0.1, 60.0), applies="startup"),
    ParamSpec("no_frame_warn_s", "double", 5.0,
              "While active: no image for this long -> /diagnostics WARN and a throttled log "
              "line naming the reason (no publisher, or publishers of another message type). "
              "0 = off.", range=(0.0, 3600.0)),
    ParamSpec("autostart", "bool", True,
              "Configure and activate by itself (plain node). False: wait for lifecycle "
              "transitions.", applies="startup"),
)

SPEC_BY_NAME: dict[str, ParamSpec] = {s.name: s for s in PARAM_SPECS}


@dataclass(frozen=True)
class NodeParams:
    """Values of all node parameters (field names = parameter names)."""

    weights: str
    map_dir: str
    image_topic: str
    compressed_input: bool
    max_image_pixels: int
    top_k: int
    match_threshold: float
    match_margin: float
    sequence_length: int
    sequence_velocities: str
    device: str
    num_threads: int
    map_frame_id: str
    max_rate_hz: float
    mapping_mode: bool
    mapping_stride: int
    pose_topic: str
    pose_type: str
    save_map_dir: str
    position_variance: float
    orientation_variance: float
    publish_markers: bool
    diagnostics_period_s: float
    no_frame_warn_s: float
    autostart: bool

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "NodeParams":
        """Build from ``{name: value}`` (missing names take defaults); validates every value."""
        unknown = set(values) - set(SPEC_BY_NAME)
        if unknown:
            raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        kwargs = {}
        for spec in PARAM_SPECS:
            value = values.get(spec.name, spec.default)
            check_value(spec, value)
            kwargs[spec.name] = float(value) if spec.type == "double" else value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "NodeParams":
        return NodeParams.from_mapping({**dataclasses.asdict(self), **changes})


def check_value(spec: ParamSpec, value: Any) -> None:
    """Raise ``ValueError`` naming the parameter when ``value`` violates its declaration."""
    ok_type = {
        "string": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }[spec.type]
    if not ok_type(value):
        raise ValueError(f"parameter {spec.name}: expected {spec.type}, got {value!r}")
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        raise ValueError(
            f"parameter {spec.name}={value} outside [{spec.range[0]}, {spec.range[1]}]")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"parameter {spec.name}={value!r}: expected one of {spec.choices}")
    if spec.name == "sequence_velocities":
        try:
            parse_velocities(value)
        except ValueError as exc:
            raise ValueError(f"parameter sequence_velocities: {exc}") from None
    if spec.name == "device" and not DEVICE_RE.match(value):
        raise ValueError(f"parameter device={value!r}: expected cpu, cuda, cuda:N or mps")


for _spec in PARAM_SPECS:  # the declaration table must satisfy its own constraints
    check_value(_spec, _spec.default)


def _fmt_default(spec: ParamSpec) -> str:
    if spec.type == "bool":
        return "true" if spec.default else "false"
    if spec.type == "string":
        return f'`"{spec.default}"`'
    return f"`{spec.default}`"


def render_markdown_table(specs: tuple[ParamSpec, ...] = PARAM_SPECS) -> str:
    """Markdown table of the parameters (name, type, default, range/choices, description)."""
    lines = [
        "| Parameter | Type | Default | Range / choices | Takes effect | Description |",
        "|---|---|---|---|---|---|",
    ]
    for s in specs:
        runtime = APPLIES[s.applies]
        desc = s.description.replace("|", "\\|")
        lines.append(f"| `{s.name}` | {s.type} | {_fmt_default(s)} | {s.constraints or '-'} | "
                     f"{runtime} | {desc} |")
    return "\n".join(lines) + "\n"


def render_yaml(specs: tuple[ParamSpec, ...] = PARAM_SPECS,
                node_key: str = PARAMS_FILE_KEY) -> str:
    """Render a ROS 2 params file with every parameter at its default.

    One comment per parameter; keyed ``/**/vpr_node`` (applies in any namespace).
    """
    import json

    out = [f"{node_key}:", "  ros__parameters:"]
    for s in specs:
        val = ("true" if s.default else "false") if s.type == "bool" else json.dumps(s.default)
        out.append(f"    # {s.description}")
        out.append(f"    {s.name}: {val}")
    return "\n".join(out) + "\n"


BEGIN_MARK = "<!-- BEGIN GENERATED PARAMETER TABLE -->\n"
END_MARK = "<!-- END GENERATED PARAMETER TABLE -->"


def update_markdown(text: str) -> str:
    """``text`` with the part between the BEGIN/END markers replaced by the current table."""
    if BEGIN_MARK not in text or END_MARK not in text:
        raise ValueError("markers for the generated parameter table not found")
    head, rest = text.split(BEGIN_MARK, 1)
    _, tail = rest.split(END_MARK, 1)
    return head + BEGIN_MARK + render_markdown_table() + END_MARK + tail


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print the vpr_node parameter table.")
    ap.add_argument("--yaml", action="store_true", help="print a params file instead")
    ap.add_argument("--update", metavar="MD",
                    help="rewrite the generated table inside this markdown file (between markers)")
    ns = ap.parse_args(argv)
    if ns.update:
        from pathlib import Path

        path = Path(ns.update)
        path.write_text(update_markdown(path.read_text()))
        return 0
    print(render_yaml() if ns.yaml else render_markdown_table(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
