"""The package layout keeps its promises: stores behind store/, an engine without stores or Ray, an API
module that does not pull in the ingest pipeline."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

LIB = Path(__file__).resolve().parents[1] / "lib" / "facecluster"


def _modules(package: str | None = None) -> list[Path]:
    return sorted((LIB / package if package else LIB).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_store_speaks_to_mongodb_and_qdrant() -> None:
    for path in _modules():
        if path.parent.name == "store":
            continue
        text = path.read_text()
        assert ".db." not in text and ".db[" not in text, path
        assert not any(name.startswith(("pymongo", "qdrant_client")) for name in _imports(path)), path


def test_the_engine_knows_no_stores_no_ray_and_no_upper_layer() -> None:
    upper = ("facecluster.store", "facecluster.ingest", "facecluster.cluster", "facecluster.people")
    upper += ("facecluster.train", "facecluster.api", "facecluster.eval", "facecluster.cli", "ray")
    for path in _modules("engine"):
        assert not any(name.startswith(upper) for name in _imports(path)), path


def test_at_most_eight_modules_at_the_top() -> None:
    assert len(list(LIB.glob("*.py"))) <= 8


def loaded_with(module: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of `candidates` a fresh interpreter has imported after importing `module`."""
    code = f"import sys, json, {module}; print(json.dumps([m for m in {candidates!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout))


def test_importing_the_api_leaves_ray_data_and_the_ingest_pipeline_out() -> None:
    assert loaded_with("facecluster.api", ("ray.data", "ray.train", "torch", "facecluster.ingest.pipeline")) == []


def test_the_ingest_model_actors_leave_qdrant_and_the_pipeline_out() -> None:
    # What the model actors unpickle (the stages module's FaceStage) starts them sooner
    # without Qdrant's client or the driver's pipeline module.
    heavy = ("qdrant_client", "facecluster.ingest.pipeline", "facecluster.store.connection")
    assert loaded_with("facecluster.ingest.stages", heavy) == []


def test_the_ingest_writers_leave_qdrants_client_to_the_storage_owner() -> None:
    # On the embedded default the writer actors call the local storage's owner actor: without Qdrant's
    # client (a second of imports) they start sooner beside the model actors.
    assert loaded_with("facecluster.ingest.writer", ("qdrant_client", "facecluster.ingest.pipeline")) == []


def test_no_module_imports_itself_back() -> None:
    """No import circle among facecluster's modules, imports inside functions included."""
    names = {".".join(("facecluster", *p.relative_to(LIB).with_suffix("").parts)).removesuffix(".__init__"): p
             for p in _modules()}  # fmt: skip
    graph = {
        name: {
            target
            for imported in _imports(path)
            if (target := next((m for m in (imported, imported.rsplit(".", 1)[0]) if m in names), None))
            and target != name
            and not (name == "facecluster" or target == "facecluster")
        }
        for name, path in names.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, " -> ".join([*trail[trail.index(nxt) :], nxt]) if nxt in trail else nxt
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
