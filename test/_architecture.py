"""Architecture checks on a package source tree, by AST only (nothing is imported).

Every check is a function ``check_*(root: Path) -> list[str]`` taking the package directory
(``.../vl2spike_ros``, or a synthetic tree in a test) and returning one line per violation
(empty list: clean). ``test_architecture.py`` runs them on the real tree and on small synthetic
trees that must fail, so that no check can pass vacuously.

What counts as an import: ``import a.b``, ``from a import b``, relative imports (resolved against
the importing module), imports anywhere (module level, inside functions, classes, ``try``/``if``
blocks) and ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a constant string.
Imports under ``if TYPE_CHECKING:`` count for the layer rule and the ROS rule (a type-level
dependency is still a dependency) but not for the cycle check (they never run).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Layers of vl2spike_ros: a layer is a top-level subpackage (``models``, ``vpr``, ...) or a
# top-level module (``atomic``, ``paths``, ``__init__``). A module may import modules of its own
# layer and of the layers listed for it here; anything else is a violation, and so is a layer
# missing from the table (a new subpackage must be placed in it).
#
#   models  <-  vpr, energy, data, io  <-  ros          (the robot path: what the node runs)
#   train (the weight factory), export (NIR files), bench, cli: LEAVES, which nothing on the
#   robot path imports.
#
# Edges inside the middle band are listed one by one (as strict as the code allows):
# data -> io (bag frame sources), vpr -> energy (the pipeline's energy estimate); vpr does
# not read datasets or bags itself.
BASE = frozenset({"__init__", "atomic", "paths"})
ROBOT_PATH = frozenset(BASE | {"models", "energy", "data", "io", "vpr", "ros"})
LEAVES = frozenset({"train", "export", "bench", "cli"})
ALLOWED_EDGES: dict[str, frozenset[str]] = {
    "__init__": frozenset(),
    "atomic": frozenset(),
    "paths": frozenset(),
    "models": BASE,                                           # networks, weights files
    "energy": BASE | {"models"},                              # counting rules on nn.Modules
    "io": BASE | {"models"},                                  # ROS Image <-> numpy, rosbags
    "data": BASE | {"models", "io"},                          # datasets, frame sources
    "vpr": BASE | {"models", "energy"},                       # descriptors, maps, matching
    "ros": ROBOT_PATH,                                        # the node: top of the robot path
    "train": ROBOT_PATH - {"ros"},                            # makes weights, never the node
    "export": BASE | {"models", "vpr"},                       # NIR export of a place model
    "bench": ROBOT_PATH | {"train", "export"},                # trains, runs the node (bench/ros)
    "cli": ROBOT_PATH | LEAVES - {"cli"},                     # wires everything together
}

# Third-party packages that only modules under a directory named ``ros/`` may import.
ROS_PACKAGES = frozenset({
    "rclpy", "rclpy_lifecycle", "rcl_interfaces", "lifecycle_msgs", "sensor_msgs", "std_msgs",
    "geometry_msgs", "nav_msgs", "visualization_msgs", "diagnostic_msgs", "std_srvs",
    "builtin_interfaces", "rosidl_runtime_py", "ament_index_python", "launch", "launch_ros",
})

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60
MAX_FUNCTION_PARAMS = 8  # self/cls not counted; *args and **kwargs count one each
FORBIDDEN_ATTR_PREFIX = "vpr_"  # no ad-hoc attributes bolted onto models or other objects


@dataclass(frozen=True)
class Import:
    """One import statement (or constant ``import_module`` call) in a source file."""

    target: str          # absolute dotted name as written/resolved, e.g. "vl2spike_ros.vpr.x"
    names: tuple[str, ...]  # for ``from X import a, b``: ("a", "b"); else ()
    line: int
    type_checking: bool  # under ``if TYPE_CHECKING:``


@dataclass(frozen=True)
class SourceFile:
    """A parsed ``.py`` file of the package."""

    path: Path           # relative to the package's parent (as printed in violations)
    module: str          # dotted module name; packages are "pkg.sub" (their __init__.py)
    is_package: bool
    tree: ast.Module
    n_lines: int


def _natural_sorted(lines) -> list[str]:
    """Sort violation lines by file, then line number as a number."""
    return sorted(lines, key=lambda line: [int(t) if t.isdigit() else t
                                           for t in re.split(r"(\d+)", line)])


def iter_sources(root: Path) -> Iterator[SourceFile]:
    """Parse every ``.py`` file under the package directory ``root`` (sorted by path)."""
    root = Path(root)
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        text = path.read_text(encoding="utf-8")
        yield SourceFile(path=rel.with_suffix(".py"), module=".".join(parts),
                         is_package=is_package, tree=ast.parse(text, filename=str(path)),
                         n_lines=len(text.splitlines()))


def _is_type_checking_test(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve_relative(src: SourceFile, level: int, module: str | None) -> str:
    package = src.module.split(".") if src.is_package else src.module.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join(package + ([module] if module else []))


def _constant_import_call(node: ast.Call) -> str | None:
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(
        func, ast.Attribute) else None
    if name in ("import_module", "__import__") and node.args and isinstance(
            node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def iter_imports(src: SourceFile) -> Iterator[Import]:
    """Every import in ``src``, wherever it is, with relative names made absolute."""
    def walk(node: ast.AST, type_checking: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name, (), child.lineno, type_checking)
            elif isinstance(child, ast.ImportFrom):
                target = (_resolve_relative(src, child.level, child.module) if child.level
                          else child.module or "")
                yield Import(target, tuple(a.name for a in child.names), child.lineno,
                             type_checking)
            elif isinstance(child, ast.Call) and _constant_import_call(child):
                yield Import(_constant_import_call(child), (), child.lineno, type_checking)
            if isinstance(child, ast.If) and _is_type_checking_test(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), True)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), type_checking)
            else:
                yield from walk(child, type_checking)
    yield from walk(src.tree, False)


def layer_of(module: str, package: str) -> str | None:
    """Return the layer of a dotted module name inside ``package`` (None: outside it)."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _targets(imp: Import, modules: set[str]) -> list[str]:
    """Modules of the tree that ``imp`` loads: ``from p import m`` loads p.m when it is one."""
    found = [f"{imp.target}.{name}" for name in imp.names if f"{imp.target}.{name}" in modules]
    if imp.target in modules and (not imp.names or len(found) < len(imp.names)):
        found.append(imp.target)
    if not found:  # e.g. "import pkg.sub.mod.attr" -> longest existing prefix
        parts = imp.target.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                found.append(".".join(parts[:end]))
                break
    return found


def check_layers(root: Path, allowed: dict[str, frozenset[str]] = ALLOWED_EDGES) -> list[str]:
    """List imports between layers that ``allowed`` does not list (or from unlisted layers)."""
    root = Path(root)
    package = root.name
    sources = list(iter_sources(root))
    modules = {s.module for s in sources}
    out = []
    for src in sources:
        own = layer_of(src.module, package)
        for imp in iter_imports(src):
            for target in _targets(imp, modules):
                dep = layer_of(target, package)
                if dep is None or dep == own:
                    continue
                if own not in allowed:
                    out.append(f"{src.path}:{imp.line}: layer {own!r} is not in the table")
                elif dep not in allowed[own]:
                    out.append(f"{src.path}:{imp.line}: {own} must not import {dep} ({target})")
    return _natural_sorted(set(out))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Map each module to the modules of the tree it imports when it runs.

    Imports under ``if TYPE_CHECKING:`` are left out (they never run).

    Importing ``p.q.m`` also runs ``p/__init__.py`` and ``p/q/__init__.py``; those implicit
    edges are kept except to packages that contain the importer (already being imported).
    """
    sources = list(iter_sources(Path(root)))
    modules = {s.module for s in sources}
    graph: dict[str, set[str]] = {s.module: set() for s in sources}
    for src in sources:
        own = src.module.split(".")
        ancestors = {".".join(own[:end]) for end in range(1, len(own))}
        for imp in iter_imports(src):
            if imp.type_checking:
                continue
            for target in _targets(imp, modules):
                parts = target.split(".")
                packages = {".".join(parts[:end]) for end in range(1, len(parts))}
                deps = {target} | ((packages & modules) - ancestors)
                graph[src.module] |= deps - {src.module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def check_cycles(root: Path) -> list[str]:
    """One line per import cycle between modules of the tree."""
    graph = import_graph(root)
    out = []
    for cycle in find_cycles(graph):
        members = set(cycle)
        edges = [f"{a} -> {b}" for a in cycle for b in sorted(graph[a] & members)]
        out.append("cycle: " + ", ".join(edges))
    return out


def _under_ros_dir(src: SourceFile) -> bool:
    return "ros" in src.path.parts[1:-1]


def check_ros_imports(root: Path, packages: frozenset[str] = ROS_PACKAGES) -> list[str]:
    """List imports of ROS packages (rclpy, *_msgs, ...) outside directories named ``ros/``."""
    root = Path(root)
    out = []
    for src in iter_sources(root):
        if _under_ros_dir(src):
            continue
        for imp in iter_imports(src):
            if imp.target.split(".")[0] in packages:
                out.append(f"{src.path}:{imp.line}: imports {imp.target} outside a ros/ directory")
    return out


def _assigned_attributes(node: ast.AST) -> Iterator[ast.Attribute]:
    if isinstance(node, ast.Attribute):
        yield node
    elif isinstance(node, (ast.Tuple, ast.List)):
        for elt in node.elts:
            yield from _assigned_attributes(elt)
    elif isinstance(node, ast.Starred):
        yield from _assigned_attributes(node.value)


def check_forbidden_attributes(root: Path, prefix: str = FORBIDDEN_ATTR_PREFIX) -> list[str]:
    """List assignments ``x.vpr_... = ...`` (also ``+=``, annotated, tuple targets, setattr)."""
    out = []
    for src in iter_sources(Path(root)):
        for node in ast.walk(src.tree):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
                targets = [node.target]
            elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
                targets = [node.target]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                targets = [node.optional_vars]
            for attr in (a for t in targets for a in _assigned_attributes(t)):
                if attr.attr.startswith(prefix):
                    out.append(f"{src.path}:{attr.lineno}: assigns attribute {attr.attr}")
            if isinstance(node, ast.Call) and _is_setattr(node) and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and (
                        name.value.startswith(prefix)):
                    out.append(f"{src.path}:{node.lineno}: setattr of attribute {name.value}")
    return _natural_sorted(out)


def _is_setattr(node: ast.Call) -> bool:
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "setattr") or (
        isinstance(func, ast.Attribute) and func.attr == "__setattr__")


def _param_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = fn.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    n = len(positional) + len(args.kwonlyargs) + (args.vararg is not None) + (
        args.kwarg is not None)
    if positional and positional[0] in ("self", "cls"):
        n -= 1
    return n


def check_sizes(root: Path, max_file_lines: int = MAX_FILE_LINES,
                max_function_lines: int = MAX_FUNCTION_LINES,
                max_params: int = MAX_FUNCTION_PARAMS) -> list[str]:
    """List files, and functions, over the size limits.

    Files over ``max_file_lines`` lines; functions over ``max_function_lines`` lines (``def``
    line to last line, docstring included, decorators not) or ``max_params`` parameters.
    """
    out = []
    for src in iter_sources(Path(root)):
        if src.n_lines > max_file_lines:
            out.append(f"{src.path}: {src.n_lines} lines (max {max_file_lines})")
        for node in ast.walk(src.tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            n_lines = node.end_lineno - node.lineno + 1
            if n_lines > max_function_lines:
                out.append(f"{src.path}:{node.lineno}: function {node.name} has {n_lines} lines"
                           f" (max {max_function_lines})")
            n_params = _param_count(node)
            if n_params > max_params:
                out.append(f"{src.path}:{node.lineno}: function {node.name} has {n_params}"
                           f" parameters (max {max_params})")
    return _natural_sorted(out)
