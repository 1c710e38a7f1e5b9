"""Static checks of launch/vpr.launch.{xml,py} and config/vpr_node.yaml.

``launch`` / ``launch_ros`` are not installable here, so the launch files are parsed (XML with
ElementTree, Python with ast) and checked against setup.py's console scripts and the node's
parameter declarations (:data:`vl2spike_ros.ros.params.PARAM_SPECS`).
"""
from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from vl2spike_ros.ros.params import (NODE_NAME, PARAM_SPECS, PARAMS_FILE_KEY, SPEC_BY_NAME,
                                     check_value, render_yaml)

ROOT = Path(__file__).resolve().parents[1]
XML = ROOT / "launch" / "vpr.launch.xml"
PY = ROOT / "launch" / "vpr.launch.py"
YAML = ROOT / "config" / "vpr_node.yaml"


def _setup_info() -> tuple[str, dict[str, str]]:
    """(package name, {console script: entry point}) read from setup.py without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    package = None
    scripts: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PACKAGE"
                                                for t in node.targets):
            package = ast.literal_eval(node.value)
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    for entry in ast.literal_eval(v):
                        name, target = (s.strip() for s in entry.split("=", 1))
                        scripts[name] = target
    assert package and scripts, "could not read PACKAGE / console_scripts from setup.py"
    return package, scripts


def _importable(target: str) -> None:
    import importlib

    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func)), target


def test_xml_nodes_match_console_scripts():
    package, scripts = _setup_info()
    root = ET.parse(XML).getroot()
    assert root.tag == "launch"
    nodes = root.findall(".//node")
    assert nodes, "no <node> in vpr.launch.xml"
    for node in nodes:
        assert node.get("pkg") == package
        assert node.get("exec") in scripts, f"exec {node.get('exec')!r} is not a console script"
        _importable(scripts[node.get("exec")])
        assert node.get("name") == NODE_NAME  # the params file is keyed by this name


def test_xml_params_and_args_are_declared():
    root = ET.parse(XML).getroot()
    declared_args = {a.get("name") for a in root.findall("arg")}
    assert {"weights", "map", "image_topic", "compressed", "params_file"} <= declared_args
    text = XML.read_text()
    used = set(re.findall(r"\$\(var (\w+)\)", text))
    assert used <= declared_args, f"undeclared launch args used: {used - declared_args}"
    assert declared_args <= used, f"launch args never used: {declared_args - used}"
    for node in root.findall(".//node"):
        named = [p.get("name") for p in node.findall("param") if p.get("name")]
        assert named and set(named) <= set(SPEC_BY_NAME), set(named) - set(SPEC_BY_NAME)
        assert any(p.get("from") == "$(var params_file)" for p in node.findall("param"))
    # a default given on the command line must be valid for its parameter
    args = {a.get("name"): a.get("default") for a in root.findall("arg")}
    assert args["compressed"] in ("true", "false")


def _py_launch_tree() -> ast.Module:
    return ast.parse(PY.read_text())


def test_py_launch_matches_console_scripts_and_params():
    package, scripts = _setup_info()
    tree = _py_launch_tree()
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", getattr(n.func, "attr", None)) == "Node"]
    assert calls, "no Node(...) in vpr.launch.py"
    for call in calls:
        kw = {k.arg: k.value for k in call.keywords}
        assert ast.literal_eval(kw["package"]) == package
        assert ast.literal_eval(kw["executable"]) in scripts
        assert ast.literal_eval(kw["name"]) == NODE_NAME
        dicts = [d for d in ast.walk(kw["parameters"]) if isinstance(d, ast.Dict)]
        keys = {ast.literal_eval(k) for d in dicts for k in d.keys}
        assert keys and keys <= set(SPEC_BY_NAME), keys - set(SPEC_BY_NAME)


def test_py_and_xml_launch_offer_the_same_arguments():
    tree = _py_launch_tree()
    assign = next(n for n in tree.body if isinstance(n, ast.Assign)
                  and getattr(n.targets[0], "id", "") == "ARGUMENTS")
    py_args = {elt.elts[0].value for elt in assign.value.elts}
    xml_args = {a.get("name") for a in ET.parse(XML).getroot().findall("arg")}
    assert py_args == xml_args


def test_params_yaml_has_every_declared_parameter_with_valid_values():
    data = yaml.safe_load(YAML.read_text())
    assert list(data) == [PARAMS_FILE_KEY] == [f"/**/{NODE_NAME}"]  # any namespace
    params = data[PARAMS_FILE_KEY]["ros__parameters"]
    assert set(params) == {s.name for s in PARAM_SPECS}
    for name, value in params.items():
        spec = SPEC_BY_NAME[name]
        check_value(spec, value)  # type and range, as the node would check them
        if spec.type == "double":
            assert isinstance(value, float), f"{name}: write {value} as a float (e.g. {value}.0)"


def test_setup_installs_launch_and_config():
    text = (ROOT / "setup.py").read_text()
    assert 'glob("launch/*.launch.*")' in text
    assert 'glob("config/*.yaml")' in text


@pytest.mark.parametrize("bad", [{"top_k": 0}, {"match_threshold": 1.5}, {"device": "gpu"},
                                 {"pose_type": "twist"}, {"nope": 1}, {"top_k": 2.0}])
def test_param_table_rejects_invalid_values(bad):
    from vl2spike_ros.ros.params import NodeParams

    with pytest.raises(ValueError):
        NodeParams.from_mapping(bad)


def test_params_yaml_is_the_generated_file():
    """config/vpr_node.yaml = header comments + ``python -m vl2spike_ros.ros.params --yaml``."""
    body = YAML.read_text().splitlines(keepends=True)
    start = next(i for i, ln in enumerate(body) if not ln.startswith("#"))
    assert "".join(body[start:]) == render_yaml(), (
        "regenerate: python -m vl2spike_ros.ros.params --yaml (keep the header comments)")
