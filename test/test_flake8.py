"""flake8 on the package and the tests, as ament_flake8 would run it (config: setup.cfg)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "setup.cfg"
TARGETS = ("vl2spike_ros", "test")


def run_flake8(*paths: str | Path) -> subprocess.CompletedProcess:
    """Run flake8 with the repository's config on ``paths`` (from the repository root)."""
    return subprocess.run([sys.executable, "-m", "flake8", f"--config={CONFIG}", *map(str, paths)],
                          cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def test_flake8():
    result = run_flake8(*TARGETS)
    report = result.stdout + result.stderr
    n = len(report.splitlines())
    assert result.returncode == 0, f"flake8: {n} problem(s)\n{report}"


def test_flake8_config_flags_long_lines_and_unused_imports(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\nX = '" + "x" * 94 + "'\n")   # line of 100 characters
    good = tmp_path / "good.py"
    good.write_text("X = '" + "x" * 93 + "'\n")              # line of 99 characters
    result = run_flake8(bad, good)
    assert result.returncode == 1
    codes = sorted(line.split()[1] for line in result.stdout.splitlines())
    assert codes == ["E501", "F401"], result.stdout
