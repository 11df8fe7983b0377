"""Boundaries the architecture promises: MLX only in the model files, no torch/cv2 in models/."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mlx_hands"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((PKG / "models").glob("*.py")), ids=lambda p: p.name)
def test_models_import_no_cv2_torch_pil(path):
    assert not _imports(path) & {"cv2", "torch", "PIL", "ultralytics"}


NUMPY_ONLY = [*sorted((PKG / "pipeline").glob("*.py")), *sorted((PKG / "render").glob("*.py")),
              *sorted((PKG / "convert").glob("*.py"))]


@pytest.mark.parametrize("path", [p for p in NUMPY_ONLY if p.name not in ("runner.py", "__init__.py")],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_numpy_side_imports_no_mlx(path):
    assert "mlx" not in _imports(path)


def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_nothing_imports_torch():
    # only the benchmark may time the user's PyTorch reference, imported inside the function that does it
    for path in PKG.rglob("*.py"):
        imports = _top_level_imports(path) if path.name == "bench.py" else _imports(path)
        assert "torch" not in imports, path
