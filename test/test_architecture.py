"""Architecture rules of vl2spike_ros, checked on the source by AST (see ``_architecture.py``).

Each rule runs on the real package and on a synthetic tree written to ``tmp_path`` that breaks
it, so every check is shown to fail when it should.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from _architecture import (ALLOWED_EDGES, LEAVES, MAX_FILE_LINES, MAX_FUNCTION_LINES,
                           MAX_FUNCTION_PARAMS, ROBOT_PATH, check_cycles,
                           check_forbidden_attributes, check_layers, check_ros_imports,
                           check_sizes)

PACKAGE = Path(__file__).resolve().parents[1] / "vl2spike_ros"
ALL_CHECKS = (check_layers, check_cycles, check_ros_imports, check_forbidden_attributes,
              check_sizes)


def write_tree(base: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path -> source) under ``base``, with an ``__init__.py`` in each dir."""
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        for parent in path.relative_to(base).parents[:-1]:
            (base / parent / "__init__.py").touch()
    return base / "pkg"


def function_source(name: str, n_lines: int) -> str:
    """Return the source of a function of exactly ``n_lines`` lines (``def`` line included)."""
    body = "".join(f"    x{i} = {i}\n" for i in range(n_lines - 2))
    return f"def {name}():\n{body}    return 0\n"


# ---- the real tree ---------------------------------------------------------------------------

@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
def test_real_package(check):
    violations = check(PACKAGE)
    assert not violations, f"{len(violations)} violation(s):\n" + "\n".join(violations)


def test_table_names_every_layer_of_the_package():
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    layers |= {p.stem for p in PACKAGE.glob("*.py")}
    assert layers <= set(ALLOWED_EDGES), sorted(layers - set(ALLOWED_EDGES))
    for layer in ROBOT_PATH:
        assert not ALLOWED_EDGES[layer] & LEAVES, layer


# ---- synthetic trees: each check must fail ---------------------------------------------------

CLEAN_TREE = {
    "pkg/paths.py": "ROOT = 1\n",
    "pkg/models/__init__.py": "from .net import Net\n",
    "pkg/models/net.py": "from pkg.paths import ROOT\n\nclass Net:\n    pass\n",
    "pkg/vpr/x.py": """\
        from typing import TYPE_CHECKING
        from pkg.models import Net
        from . import y
        if TYPE_CHECKING:
            from pkg.vpr.y import Y
        vpr_local = 1
        def f(m):
            m.other = 1
            return getattr(m, "vpr_x", None)
        """,
    "pkg/vpr/y.py": "class Y:\n    pass\n",
    "pkg/ros/node.py": "import rclpy\nfrom sensor_msgs.msg import Image\nfrom pkg.vpr import x\n",
    "pkg/bench/ros/demo.py": "import rclpy\nfrom pkg.train import t\n",
    "pkg/train/t.py": "from pkg.vpr.x import f\n",
    "pkg/cli/main.py": "import importlib\nimportlib.import_module('pkg.bench.ros.demo')\n",
}


def test_clean_synthetic_tree_passes(tmp_path):
    root = write_tree(tmp_path, CLEAN_TREE)
    for check in ALL_CHECKS:
        assert check(root) == [], check.__name__


@pytest.mark.parametrize("source", [
    "from pkg.train.t import g\n",
    "def f():\n    from pkg.train import t\n",          # inside a function
    "from ..train import t\n",                           # relative
    "import pkg.cli.main\n",
    "import importlib\nimportlib.import_module('pkg.bench.b')\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.train.t import g\n",
])
def test_layers_flags_robot_path_importing_a_leaf(tmp_path, source):
    root = write_tree(tmp_path, {"pkg/vpr/x.py": source, "pkg/train/t.py": "g = 1\n",
                                 "pkg/cli/main.py": "", "pkg/bench/b.py": ""})
    violations = check_layers(root)
    assert len(violations) == 1 and "vpr must not import" in violations[0], violations


def test_layers_flags_models_importing_vpr_and_unknown_layers(tmp_path):
    root = write_tree(tmp_path, {"pkg/models/cnn.py": "from pkg.vpr import x\n",
                                 "pkg/vpr/x.py": "", "pkg/utils/u.py": "import pkg.paths\n",
                                 "pkg/paths.py": ""})
    violations = check_layers(root)
    assert any("models must not import vpr" in v for v in violations), violations
    assert any("'utils' is not in the table" in v for v in violations), violations


def test_cycles_flags_a_cycle_through_an_import_inside_a_function(tmp_path):
    root = write_tree(tmp_path, {
        "pkg/vpr/a.py": "from pkg.vpr.b import g\n",
        "pkg/vpr/b.py": "def g():\n    from pkg.vpr import a\n    return a\n",
    })
    violations = check_cycles(root)
    assert violations == ["cycle: pkg.vpr.a -> pkg.vpr.b, pkg.vpr.b -> pkg.vpr.a"], violations


def test_cycles_flags_a_cycle_through_a_package_init(tmp_path):
    root = write_tree(tmp_path, {
        "pkg/models/__init__.py": "from .net import Net\n",
        "pkg/models/net.py": "from pkg.vpr.d import D\nclass Net:\n    pass\n",
        # importing pkg.models.cfg runs pkg/models/__init__.py first
        "pkg/vpr/d.py": "from pkg.models.cfg import C\nclass D:\n    pass\n",
        "pkg/models/cfg.py": "C = 1\n",
    })
    violations = check_cycles(root)
    assert len(violations) == 1 and "pkg.vpr.d -> pkg.models" in violations[0], violations


def test_cycles_leave_out_type_checking_imports(tmp_path):
    root = write_tree(tmp_path, {
        "pkg/vpr/a.py": "from pkg.vpr.b import g\n",
        "pkg/vpr/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from pkg.vpr.a import A\n"
                        "else:\n    pass\ndef g():\n    pass\n",
    })
    assert check_cycles(root) == []


@pytest.mark.parametrize("source", [
    "import rclpy\n",
    "def f():\n    from sensor_msgs.msg import Image\n",
    "from rclpy.node import Node\n",
    "import importlib\nimportlib.import_module('std_msgs.msg')\n",
])
def test_ros_imports_flagged_outside_ros_dirs(tmp_path, source):
    root = write_tree(tmp_path, {"pkg/vpr/x.py": source, "pkg/ros/ok.py": source,
                                 "pkg/bench/ros/ok.py": source})
    violations = check_ros_imports(root)
    assert len(violations) == 1 and "pkg/vpr/x.py" in violations[0], violations


def test_forbidden_attributes_flagged(tmp_path):
    root = write_tree(tmp_path, {"pkg/models/m.py": """\
        model.vpr_foo = 1
        model.vpr_pair, other = 1, 2
        model.vpr_count += 1
        model.vpr_typed: int = 1
        setattr(model, "vpr_set", 1)
        object.__setattr__(model, "vpr_frozen", 1)
        for model.vpr_loop in range(2):
            pass
        """})
    violations = check_forbidden_attributes(root)
    names = [v.rsplit(" ", 1)[-1] for v in violations]
    assert sorted(names) == sorted(["vpr_foo", "vpr_pair", "vpr_count", "vpr_typed", "vpr_set",
                                    "vpr_frozen", "vpr_loop"]), violations


def test_sizes_flag_long_functions_many_parameters_and_long_files(tmp_path):
    params_ok = ", ".join(f"a{i}" for i in range(MAX_FUNCTION_PARAMS))
    root = write_tree(tmp_path, {
        "pkg/ok.py": function_source("fits", MAX_FUNCTION_LINES)
        + f"class C:\n    def m(self, {params_ok}):\n        pass\n",
        "pkg/long_fn.py": function_source("too_long", MAX_FUNCTION_LINES + 1),
        "pkg/params.py": f"def many({params_ok}, *rest):\n    pass\n",
        "pkg/kwonly.py": f"def kw(cls, *, {params_ok}, extra):\n    pass\n",
        "pkg/file_ok.py": "x = 1\n" * MAX_FILE_LINES,
        "pkg/file_long.py": "x = 1\n" * (MAX_FILE_LINES + 1),
    })
    violations = check_sizes(root)
    assert len(violations) == 4, violations
    assert any(f"too_long has {MAX_FUNCTION_LINES + 1} lines" in v for v in violations)
    assert any(f"many has {MAX_FUNCTION_PARAMS + 1} parameters" in v for v in violations)
    assert any(f"kw has {MAX_FUNCTION_PARAMS + 1} parameters" in v for v in violations)
    assert any(f"file_long.py: {MAX_FILE_LINES + 1} lines" in v for v in violations)
