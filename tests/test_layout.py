"""The architecture's promises, checked on the package's own import graph (absolute and relative imports alike):
every import points down a fixed order of floors, nothing forms a circle, MLX stays in the model files and the
one seam that runs them, torch is never imported, and imports hide inside functions only for optional heavy
dependencies. `check_package` is also run on a copy with a planted bad import, to show that it can fail."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mlx_hands"

# Floors, lowest first: a module may import from its own floor or a lower one (never a higher one).
FLOORS = [
    ("config", "types", "settings", "geometry", "blas"),  # data, constants, numpy helpers
    ("models", "transfer"),  # MLX networks and host <-> device copies
    ("quant", "weights", "kernel_cache"),  # in-memory quantization; the canonical folder; the GPU kernel cache
    ("convert",),  # other formats -> the canonical folder, offline
    ("hub",),  # the one resolver and loader
    ("pipeline", "render", "export", "synthetic", "bench", "warm_job"),  # numpy/OpenCV around the networks; the harness
    ("serve", "annotate", "commands", "cli", "__main__", ""),  # callers (`""`: the package's __init__)
]
# Modules that use neither MLX nor the modules built on it (numpy / OpenCV / pyarrow / the pipeline's API only).
NO_MLX = ("pipeline", "render", "export", "convert", "geometry", "types", "config", "settings", "serve", "annotate")
MLX_SIDE = ("models", "transfer", "quant", "weights", "hub", "synthetic", "bench", "kernel_cache", "warm_job")
MLX_SEAMS = ("pipeline.runner",)  # the one module of those floors that crosses into MLX
# convert/ reads foreign formats with numpy and writes through weights (it never computes with MLX itself)
MLX_SIDE_OK = {"convert": ("weights", "quant", "models"),
               "annotate": ("hub",)}  # hub.resolve: which converted files a run used (their fingerprint)
# Third-party modules that may be imported inside a function (optional or heavy, with a comment saying why).
LAZY_OK = {"mlx", "ray", "torch",
           "av"}  # PyAV: FFmpeg, loaded only to write a video (never beside OpenCV's camera capture in `live`)


def _modname(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(pkg: Path) -> dict[str, list[tuple[str, bool, int]]]:
    """module -> [(imported module, inside a function or class, line)] for every import, relative ones resolved."""
    root, name = pkg.parent, pkg.name
    out = {}
    for path in sorted(pkg.rglob("*.py")):
        mod = _modname(path, root)
        base = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        nested = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.ClassDef)) for n in ast.walk(fn)}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    src = ".".join(anchor + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # `from . import x` may name a submodule
                names = [src] + [f"{src}.{a.name}" for a in node.names] if not node.module else [src]
            else:
                continue
            found += [(n, id(node) in nested, node.lineno) for n in names]
        out[mod] = found
    # names imported from a package (`from .. import __version__`) are that package, not modules of their own
    modules = set(out)
    for mod, found in out.items():
        resolved = []
        for n, lazy, line in found:
            while n.startswith(name + ".") and n not in modules:
                n = n.rpartition(".")[0]
            resolved.append((n, lazy, line))
        out[mod] = resolved
    return out


def _inner(target: str, pkg_name: str) -> str | None:
    """'mlx_hands.pipeline.runner' -> 'pipeline.runner'; None for third-party modules."""
    if target == pkg_name:
        return ""
    return target[len(pkg_name) + 1:] if target.startswith(pkg_name + ".") else None


def _floor(inner: str) -> int:
    top = inner.split(".")[0]
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise AssertionError(f"module {inner!r} is on no floor: add it to tests/test_layout.py FLOORS")


def check_package(pkg: Path) -> list[str]:
    """Every broken promise, one line each (empty when the package keeps them all)."""
    name = pkg.name
    graph = imports(pkg)
    problems, edges = [], {}
    for mod, found in graph.items():
        inner = _inner(mod, name)
        for target, lazy, line in found:
            t = _inner(target, name)
            where = f"{mod}:{line}"
            top = target.split(".")[0]
            if t is None:  # a third-party module
                if top == "torch":
                    problems.append(f"{where} imports torch")
                if top in ("cv2", "PIL", "torch", "ultralytics") and inner.startswith("models"):
                    problems.append(f"{where}: models/ imports {top}")
                if top == "mlx" and inner.split(".")[0] in NO_MLX and inner not in MLX_SEAMS:
                    problems.append(f"{where}: {inner} imports MLX (only the model files and {MLX_SEAMS} may)")
                if lazy and top not in LAZY_OK:
                    problems.append(f"{where}: imports {target} inside a function (only optional heavy "
                                    f"dependencies may: {sorted(LAZY_OK)})")
                continue
            if t == inner or not t and inner == "":
                continue
            side, top_inner = t.split(".")[0], inner.split(".")[0]
            if (top_inner in NO_MLX and inner not in MLX_SEAMS and side in MLX_SIDE
                    and side not in MLX_SIDE_OK.get(top_inner, ())):
                problems.append(f"{where}: {inner} imports {t}, which computes with MLX (only {MLX_SEAMS} may)")
            if lazy:
                problems.append(f"{where}: imports {target} inside a function (a hidden edge of the graph)")
            if _floor(t) > _floor(inner):
                problems.append(f"{where}: {inner or name} imports {t}, which is above it")
            edges.setdefault(inner, set()).add(t)
    # circles: any module that reaches itself
    for start in edges:
        seen, todo = set(), list(edges.get(start, ()))
        while todo:
            m = todo.pop()
            if m == start:
                problems.append(f"{start or name} is in an import circle")
                break
            if m not in seen:
                seen.add(m)
                todo += list(edges.get(m, ()))
    return problems


def test_the_package_keeps_its_promises():
    assert check_package(PKG) == []


@pytest.mark.parametrize("file, line, expected", [
    # a relative import that runs back up (the pipeline's numpy code reaching into the model files)
    ("pipeline/preprocess.py", "from ..models.wilor import normalize_crops\n",
     "pipeline.preprocess imports models.wilor, which computes with MLX"),
    # a lower floor importing a higher one, absolutely
    ("weights.py", "from mlx_hands.hub import load\n", "weights imports hub, which is above it"),
    # a circle closed through an import hidden in a function
    ("types.py", "def f():\n    from .export import to_json_dict\n", "inside a function"),
    ("models/vit.py", "import cv2\n", "models/ imports cv2"),
    ("export.py", "import mlx.core as mx\n", "export imports MLX"),
])
def test_a_planted_bad_import_is_caught(tmp_path, file, line, expected):
    copy = tmp_path / "mlx_hands"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / file, "a") as f:
        f.write("\n" + line)
    problems = check_package(copy)
    assert any(expected in p for p in problems), problems


def test_models_dependency_free_of_images_and_torch():
    # the same promise in words a reader finds first: models/ is MLX + numpy only
    for mod, found in imports(PKG).items():
        if ".models" in mod:
            assert not {t.split(".")[0] for t, _, _ in found} & {"cv2", "torch", "PIL", "ultralytics"}, mod


def stale_references(path: Path) -> list[str]:
    """Names a script takes from mlx_hands that do not exist: `from mlx_hands.x import name`, and `alias.name`
    where alias is an mlx_hands module the script imported."""
    import importlib

    tree = ast.parse(path.read_text())
    aliases, stale = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mlx_hands":
            module = importlib.import_module(node.module)
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _is_module(full):
                    aliases[a.asname or a.name] = importlib.import_module(full)
                elif not hasattr(module, a.name):
                    stale.append(f"{path.name}:{node.lineno}: {full}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            if not hasattr(aliases[node.value.id], node.attr):
                stale.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return stale


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def test_benchmarks_and_scripts_use_names_that_exist():
    """The scripts outside the package run rarely (some only on a GPU): a name they take from mlx_hands that was
    moved or removed is caught here, not on the device."""
    files = sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "scripts").glob("*.py"))
    assert files
    stale = [s for f in files for s in stale_references(f)]
    assert not stale, stale


def test_a_stale_benchmark_name_is_caught(tmp_path):
    script = tmp_path / "old_bench.py"
    script.write_text("from mlx_hands import bench\nfrom mlx_hands.synthetic import random_model\n"
                      "bench.random_model()\nfrom mlx_hands.bench import torch_reference_stage\n")
    assert sorted(stale_references(script)) == ["old_bench.py:3: bench.random_model",
                                                "old_bench.py:4: mlx_hands.bench.torch_reference_stage"]
