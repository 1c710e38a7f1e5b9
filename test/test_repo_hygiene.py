"""The repository's .gitignore does not match tracked files.

A tracked-but-ignored file is silently left out of `git add -A` and confuses `git status`.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_no_tracked_file_is_ignored():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run([git, "ls-files", "-ci", "--exclude-standard"], cwd=str(ROOT),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", "tracked files matched by .gitignore:\n" + res.stdout
