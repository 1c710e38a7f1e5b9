"""Start-up of ``vpr_node`` around ``rclpy.init`` (no rclpy import).

``--help``, params-file checks, one-line errors and the report of parameters the node does not
declare.
Everything here works on plain strings so that it runs before rclpy is initialised (a broken
params file makes ``rclpy.init`` raise a 16-line traceback) and can be tested without ROS.
"""
from __future__ import annotations

import difflib
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from vl2spike_ros.ros.params import NODE_NAME, PARAM_SPECS, PARAMS_FILE_KEY

ROS_ARGS, ROS_ARGS_END = "--ros-args", "--"
HELP_FLAGS = ("-h", "--help")
# parameters rclpy declares or accepts on every node; not reported as unknown
RCLPY_PARAM_PREFIXES = ("qos_overrides.",)
RCLPY_PARAMS = ("use_sim_time", "start_type_description_service")
WRAP = 96


class StartupError(Exception):
    """The node cannot start; the message is one line meant for the user."""


@dataclass(frozen=True)
class CommandLine:
    """``vpr_node`` arguments split into ROS arguments and the rest."""

    help: bool = False
    params_files: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # arguments outside --ros-args other than --help


def parse_command_line(args: Iterable[str]) -> CommandLine:
    """Split ``args`` (without the program name) at ``--ros-args ... [--]`` sections."""
    in_ros, expect_file = False, False
    files: list[str] = []
    extra: list[str] = []
    want_help = False
    for arg in args:
        if expect_file:
            files.append(arg)
            expect_file = False
        elif arg == ROS_ARGS:
            in_ros = True
        elif in_ros and arg == ROS_ARGS_END:
            in_ros = False
        elif in_ros:
            expect_file = arg == "--params-file"
        elif arg in HELP_FLAGS:
            want_help = True
        else:
            extra.append(arg)
    if expect_file:
        raise StartupError("--params-file needs a file name")
    return CommandLine(want_help, tuple(files), tuple(extra))


def usage_text() -> str:
    """``vpr_node --help``: how to start it and every parameter with its default."""
    head = f"""\
usage: {NODE_NAME} [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] [-r FROM:=TO]
                [--log-level LEVEL] ...]

Spiking visual place recognition node (ROS 2 lifecycle node). With autostart: true (default)
it configures and activates itself; the camera topic is the parameter image_topic (default
"image", remappable).

examples:
  {NODE_NAME} --ros-args --params-file config/vpr_node.yaml -p map_dir:=$HOME/maps/site_a \\
      -r image:=/camera/image_raw
  ros2 run vl2spike_ros {NODE_NAME} --ros-args -r __ns:=/robot1 -p map_dir:=$HOME/maps/site_a
  ros2 launch vl2spike_ros vpr.launch.xml map:=$HOME/maps/site_a image_topic:=/camera/image_raw

Params files key the node as '{PARAMS_FILE_KEY}:' (any namespace); the packaged one is
share/vl2spike_ros/config/vpr_node.yaml. Topics, services and diagnostics: docs/node_api.md.

parameters (type, default, range):
"""
    lines = [head]
    for s in PARAM_SPECS:
        default = f'"{s.default}"' if s.type == "string" else str(s.default).lower()
        extra = f", {s.constraints}" if s.constraints else ""
        lines.append(f"  {s.name} ({s.type}, default {default}{extra})\n")
        lines.append(textwrap.fill(s.description, WRAP, initial_indent="      ",
                                   subsequent_indent="      ") + "\n")
    return "".join(lines)


def check_params_files(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Load each ``--params-file`` (YAML), check its layout and return the parsed files.

    Raises :class:`StartupError` naming the file, line and problem.
    """
    loaded = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise StartupError(f"parameters file {name} not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise StartupError(f"parameters file {name}: invalid YAML{where}: {problem}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StartupError(f"parameters file {name}: cannot read it ({exc})") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise StartupError(f"parameters file {name}: expected '{PARAMS_FILE_KEY}: "
                               f"{{ros__parameters: {{...}}}}' at the top, got "
                               f"{type(data).__name__}")
        for key, section in data.items():
            if not isinstance(section, dict) or not isinstance(
                    section.get("ros__parameters"), dict):
                raise StartupError(f"parameters file {name}: section {key!r} needs a "
                                   "'ros__parameters:' mapping of name: value")
        loaded.append(data)
    return loaded


def _key_regex(key: str) -> re.Pattern:
    """Turn an rcl params-file node key into a regex on fully qualified node names.

    ``*`` = one name token, ``**`` = any number of tokens; no leading '/' = root.
    """
    tokens = [t for t in str(key).strip("/").split("/") if t]
    parts = []
    for tok in tokens:
        parts.append("(/[^/]+)*" if tok == "**" else "/[^/]+" if tok == "*"
                     else "/" + re.escape(tok))
    return re.compile("^" + "".join(parts) + "$")


def key_applies(key: str, node_fqn: str) -> bool:
    """Tell whether params-file section ``key`` applies to node ``node_fqn`` (/r1/vpr_node)."""
    return bool(_key_regex(key).match(node_fqn))


def skipped_sections(files: Iterable[tuple[str, dict]], node_fqn: str) -> list[str]:
    """List warnings for sections meant for this node that do not apply to ``node_fqn``.

    A section is meant for the node when its key ends in the node's name; rcl skips a section
    that does not match the namespace without a word.
    """
    name = node_fqn.rsplit("/", 1)[-1]
    out = []
    for fname, data in files:
        for key, section in data.items():
            if str(key).rstrip("/").rsplit("/", 1)[-1] != name or key_applies(key, node_fqn):
                continue
            n = len(section.get("ros__parameters", {}))
            out.append(f"parameters file {fname}: section '{key}' does not apply to {node_fqn}, "
                       f"its {n} parameter(s) are ignored (key it '/**/{name}' for any namespace)")
    return out


def unknown_parameters(overrides: Iterable[str], declared: Iterable[str]) -> str | None:
    """Return one warning naming the parameters the node does not declare, or None.

    Each unknown name comes with the closest declared name when there is one.
    """
    declared = set(declared)
    unknown = sorted(n for n in set(overrides) - declared
                     if n not in RCLPY_PARAMS and not n.startswith(RCLPY_PARAM_PREFIXES))
    if not unknown:
        return None
    names = []
    for n in unknown:
        close = difflib.get_close_matches(n, sorted(declared), n=1)
        names.append(f"{n} (did you mean {close[0]}?)" if close else n)
    return (f"ignoring parameter(s) that {NODE_NAME} does not declare: {', '.join(names)} "
            f"(all parameters: {NODE_NAME} --help)")


def rcl_error_text(exc: BaseException) -> str:
    """One line from an rcl initialisation error (source locations removed)."""
    text = " ".join(str(exc).split())
    return re.sub(r",? at [^,]*?\.c:\d+", "", text)


def prepare(argv: list[str], init: Callable[[list[str]], None]
            ) -> tuple[int | None, list[tuple[str, dict]]]:
    """Handle ``--help``, check the arguments and params files, then call ``init(argv)``.

    ``init`` is ``rclpy.init``; whatever it raises becomes one line. Returns (exit code to stop
    with, or None to go on; the parsed params files by name). Messages go to stderr.
    """
    try:
        cl = parse_command_line(argv[1:])
        if cl.help:
            print(usage_text(), end="")
            return 0, []
        if cl.extra:
            raise StartupError(f"unrecognized argument(s): {' '.join(cl.extra)} (ROS arguments "
                               f"go after --ros-args; see {NODE_NAME} --help)")
        files = list(zip(cl.params_files, check_params_files(cl.params_files)))
        try:
            init(argv)
        except Exception as exc:  # noqa: BLE001 - rcl rejects the arguments: one line
            raise StartupError(rcl_error_text(exc)) from None
    except StartupError as exc:
        print(f"[{NODE_NAME}] startup error: {exc}", file=sys.stderr)
        return 2, []
    return None, files
