"""Dependencies point one way (server -> engine -> models; models.training -> models), and the
CLI module stays light: decode worker processes import it as their main module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"models": ("text4vis.engine", "text4vis.server"), "engine": ("text4vis.server",)}


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_dependencies_point_one_way() -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {module}"
        for folder, banned in FORBIDDEN.items()
        for path in (ROOT / folder).rglob("*.py")
        for module in _imports(path)
        if module.startswith(banned)
    ]
    assert not wrong, wrong


def test_nothing_imports_the_old_top_level_names() -> None:
    """Everything imports text4vis.*: a bare ``import engine`` would load a second copy of a module."""
    files = [p for d in ("server", "engine", "models", "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    wrong = [
        f"{p.relative_to(ROOT)}: {m}"
        for p in files
        for m in _imports(p)
        if m.split(".")[0] in ("server", "engine", "models")
    ]
    assert not wrong, wrong


def test_the_cli_module_imports_no_model_code() -> None:
    code = (
        "import sys, text4vis.server.cli; heavy = [m for m in ('torch', 'open_clip', 'onnxruntime', 'fastapi') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
