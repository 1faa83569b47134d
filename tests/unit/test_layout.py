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


# inside engine/, the facade on top (the CLI's offline runner above it): facade -> archive -> flow ->
# {vocab, runtime} -> the request, options and errors modules; vocab and runtime are siblings
ENGINE_LAYERS = {
    "offline": 5,
    "facade": 4,
    "archive": 3,
    "flow": 2,
    "vocab": 1,
    "runtime": 1,
    "request": 0,
    "options": 0,
    "errors": 0,
}


def _engine_part(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["text4vis", "engine"] or len(parts) < 3:
        return None
    return parts[2]


def test_inside_the_engine_dependencies_point_down() -> None:
    wrong = []
    for path in (ROOT / "engine").rglob("*.py"):
        rel = path.relative_to(ROOT / "engine")
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for module in _imports(path):
            other = _engine_part(module)
            if other is None or other == own:
                continue
            if ENGINE_LAYERS[other] >= ENGINE_LAYERS[own]:
                wrong.append(f"engine/{rel} ({own}) imports {module} ({other})")
    assert not wrong, wrong
    assert set(ENGINE_LAYERS) == {p.name.removesuffix(".py") for p in (ROOT / "engine").iterdir()} - {
        "__init__",
        "__pycache__",
    }


def test_no_import_cycle_between_the_engine_modules() -> None:
    """Module-level imports (not TYPE_CHECKING ones) form no cycle inside engine/."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "engine").rglob("*.py"):
        name = "text4vis.engine." + ".".join(path.relative_to(ROOT / "engine").with_suffix("").parts)
        graph[name.removesuffix(".__init__")] = {m for m in _runtime_imports(path) if m.startswith("text4vis.engine")}
    seen: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if seen.get(node) == 1:
            return [*trail, node]
        if seen.get(node) == 2 or node not in graph:
            return None
        seen[node] = 1
        for nxt in sorted(graph[node]):
            cycle = visit(nxt, [*trail, node])
            if cycle:
                return cycle
        seen[node] = 2
        return None

    for node in sorted(graph):
        cycle = visit(node, [])
        assert cycle is None, " -> ".join(cycle)


def _runtime_imports(path: Path) -> list[str]:
    """Imports at module level, outside ``if TYPE_CHECKING:`` blocks."""
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def test_routes_read_as_decode_engine_encode() -> None:
    """Every route is short (decode the request, one engine call, encode the answer), and what a
    request means is decided once: no route or CLI command resolves a vocabulary, an abstention
    policy or a background itself, scores, or builds a fake request to resolve frames and views."""
    long_routes = []
    for path in (ROOT / "server" / "routes").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            routed = isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and any(
                "router." in ast.unparse(d) for d in node.decorator_list
            )
            if routed:
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > 40:
                    long_routes.append(f"{path.name}:{node.name} ({length} lines)")
    assert not long_routes, long_routes
    once = {
        "class_logits(": set(),  # the one scoring rule is engine/vocab/scoring.py's rank()
        "LOGIT_SCALE": {"engine/vocab/scoring.py"},
        ".abstain.resolved(": {"engine/facade.py"},  # the request's policy
        ".background(": {"engine/facade.py"},  # its background
        "registry.ad_hoc(": {"engine/facade.py"},
        'labels=("-",)': set(),  # the fake request that resolved frames and views
    }
    for needle, allowed in once.items():
        found = {
            str(p.relative_to(ROOT))
            for folder in ("engine", "server")
            for p in (ROOT / folder).rglob("*.py")
            if needle in p.read_text()
        }
        assert found == allowed, (needle, found)
