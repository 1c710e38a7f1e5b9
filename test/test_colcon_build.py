"""`colcon build` of the package in a ROS 2 workspace installs a usable ROS 2 package.

The README's robot-workspace commands, as written: a temporary workspace whose ``src/`` holds
the package (a symlink to this repository), ``colcon build --packages-select vl2spike_ros``
with the colcon this project's venv installs, then ``source install/setup.bash``. Nothing is
left in the repository. The installed ``vl2spike`` / ``vpr_node`` run from the install tree,
and the installed code finds its Fast DDS profile through the ament index.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = "vl2spike_ros"


def _colcon() -> Path:
    cand = Path(sys.executable).parent / "colcon"
    if cand.is_file():
        return cand
    found = shutil.which("colcon")
    if not found:
        pytest.skip("colcon is not installed (pip install colcon-core colcon-ros)")
    return Path(found)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Build a colcon workspace with src/vl2spike_ros -> this repository, as the README says."""
    ws = tmp_path_factory.mktemp("ros2_ws")
    (ws / "src").mkdir()
    (ws / "src" / PKG).symlink_to(REPO, target_is_directory=True)
    before = {p for p in ("build", "install", "log") if (REPO / p).exists()}
    env = {**os.environ, "COLCON_HOME": str(ws / "colcon_home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(_colcon()), "build", "--packages-select", PKG,
           "--event-handlers", "console_direct-", "console_start_end+"]
    res = subprocess.run(cmd, cwd=str(ws), env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"colcon build failed ({res.returncode}):\n{out[-6000:]}"
    assert f"Finished <<< {PKG}" in out, out[-3000:]
    after = {p for p in ("build", "install", "log") if (REPO / p).exists()}
    assert after == before, f"colcon left {sorted(after - before)} in the repository"
    return ws


@pytest.fixture(scope="module")
def colcon_install(workspace) -> Path:
    """Return the package's install prefix inside the workspace."""
    return workspace / "install" / PKG


def test_colcon_installs_scripts_and_share(colcon_install):
    prefix = colcon_install
    for script in ("vl2spike", "vpr_node"):
        path = prefix / "lib" / PKG / script
        assert path.is_file() and os.access(path, os.X_OK), f"missing executable {path}"
        assert f"'console_scripts','{script}'" in path.read_text()
    share = prefix / "share" / PKG
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PKG).is_file()
    for folder, patterns in (("launch", ["*.launch.*"]), ("config", ["*.yaml", "*.xml"]),
                             ("config/distill", ["*.yaml"])):
        expected = sorted(p.name for pat in patterns for p in (REPO / folder).glob(pat))
        dest = share / folder
        installed = sorted(p.name for p in dest.iterdir() if p.is_file()) if dest.is_dir() else []
        assert installed == expected, (folder, installed, expected)
    assert (share / "config" / "fastdds_loopback.xml").is_file()
    site = next((prefix / "lib").glob("python3*/site-packages"))
    for module in ("io/images.py", "io/bags.py", "cli/__init__.py", "ros/env.py"):
        assert (site / PKG / module).is_file(), module
    node = site / PKG / "ros" / "node.py"
    if node.is_file():  # vpr_node's entry point target: a module-level main()
        tree = ast.parse(node.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


def _installed_env(prefix: Path) -> dict[str, str]:
    site = next((prefix / "lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(
        [str(prefix), env.get("AMENT_PREFIX_PATH", "")]).rstrip(os.pathsep)
    return env


def test_installed_package_runs_from_install_tree(colcon_install, tmp_path):
    env = _installed_env(colcon_install)
    code = (
        "import vl2spike_ros, vl2spike_ros.io.images\n"
        "from vl2spike_ros.ros.env import fastdds_profile_path\n"
        "print(vl2spike_ros.__file__)\nprint(fastdds_profile_path())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    module_file, profile = res.stdout.strip().splitlines()
    assert Path(module_file).is_relative_to(colcon_install), module_file
    assert Path(profile) == colcon_install / "share" / PKG / "config" / "fastdds_loopback.xml"
    script = colcon_install / "lib" / PKG / "vl2spike"
    res = subprocess.run([str(script), "bag", "--help"], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "write" in res.stdout and "info" in res.stdout


def _sourced_env(workspace: Path) -> dict[str, str]:
    """Return the environment without this venv's bin/ on PATH or another workspace's paths.

    The install space must provide both commands after ``source install/setup.bash``.
    """
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COLCON_", "AMENT_")) and k != "PYTHONPATH"}
    env["PATH"] = os.pathsep.join(path)
    return env


def test_setup_bash_puts_both_console_scripts_on_path(workspace):
    """Run ``vl2spike --help`` and ``vpr_node --help`` after ``source install/setup.bash``.

    Both come from the install space (bin/ wrappers of lib/vl2spike_ros, where ``ros2 run``
    looks).
    """
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not available")
    assert (workspace / "install" / "setup.bash").is_file()
    prefix = workspace / "install" / PKG
    script = ("source install/setup.bash && command -v vl2spike && command -v vpr_node && "
              "vl2spike --help && echo ==== && vpr_node --help")
    res = subprocess.run([bash, "-c", script], cwd=str(workspace), env=_sourced_env(workspace),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    found = res.stdout.splitlines()[:2]  # `command -v`: where PATH finds them
    assert found == [str(prefix / "bin" / "vl2spike"), str(prefix / "bin" / "vpr_node")], found
    cli_help, node_help = res.stdout.split("====", 1)
    assert "usage: vl2spike" in cli_help and "replay" in cli_help
    assert "usage: vpr_node" in node_help and "--params-file" in node_help
    assert "ERROR" not in res.stdout + res.stderr  # --help does not start the node
    for name in ("vl2spike", "vpr_node"):  # `ros2 run vl2spike_ros NAME` runs this file
        assert os.access(prefix / "lib" / PKG / name, os.X_OK)
