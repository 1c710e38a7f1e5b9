"""Docstring style (pydocstyle, ament_pep257's convention; config: setup.cfg)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "setup.cfg"
TARGETS = ("vl2spike_ros", "test")


def run_pydocstyle(*paths: str | Path) -> subprocess.CompletedProcess:
    """Run pydocstyle with the repository's config on ``paths``."""
    return subprocess.run(
        [sys.executable, "-m", "pydocstyle", f"--config={CONFIG}", *map(str, paths)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def test_pep257():
    result = run_pydocstyle(*TARGETS)
    report = result.stdout + result.stderr
    n = sum(1 for line in report.splitlines() if line.startswith(" "))
    assert result.returncode == 0, f"pydocstyle: {n} problem(s)\n{report}"


def test_pep257_config_flags_bad_docstrings_not_missing_ones(tmp_path):
    bad = tmp_path / "test_bad.py"   # test_*.py files are checked too
    bad.write_text('def f():\n    """returns one"""\n    return 1\n')
    missing = tmp_path / "missing.py"
    missing.write_text("def g():\n    return 1\n")   # no docstrings: D100/D103 are ignored
    result = run_pydocstyle(bad, missing)
    assert result.returncode == 1
    codes = sorted(line.split(":")[0].strip() for line in result.stdout.splitlines()
                   if line.startswith(" "))
    assert codes == ["D400", "D401", "D403"], result.stdout
