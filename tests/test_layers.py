"""The folders are the layers, and imports only go down (issue 32.3).

Layers, lowest first (docs/architecture.md, "Layers"):

0. the foundation: ``errors``, ``atomic``, ``config``, ``schedule``, ``sampling``
1. ``data``, ``crypto``, ``privacy``: datasets, CKKS and signing, DP accounting and mechanisms
2. ``model``, ``secagg``, ``server``: the encoder and its adapters; secure aggregation; the server
3. ``site``: one client and everything it holds
4. ``engine``: the phase-structured round over typed records
5. ``transports`` and ``options``: in-process and Flower; the option table both use
6. ``app``: the command line, sweeps, the "alone" baseline

A module may import its own layer and the layers below it, never one above (functions included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[1]
RANK = {
    "errors": 0, "atomic": 0, "config": 0, "schedule": 0, "sampling": 0, "__init__": 0,
    "data": 1, "crypto": 1, "privacy": 1,
    "model": 2, "secagg": 2, "server": 2,
    "site": 3,
    "engine": 4,
    "transports": 5, "options": 5,
    "app": 6,
}  # fmt: skip
# The one import that goes up: validation checks a masking threshold against the floor a lying
# server requires. threshold.py is arithmetic that imports only errors (checked below).
ALLOWED_UP = {("secure_fedsa.config", "secure_fedsa.secagg.threshold")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in (REPO / "secure_fedsa").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_folder_and_top_level_module_has_a_layer():
    assert {_layer(m) for m in _modules()} <= set(RANK)


def test_imports_only_go_down_the_layers():
    modules = _modules()
    upward = []
    for name, path in sorted(modules.items()):
        for imported in sorted(_imports(path) & set(modules)):
            if RANK[_layer(imported)] > RANK[_layer(name)] and (name, imported) not in ALLOWED_UP:
                upward.append(f"{name} ({_layer(name)}) imports {imported} ({_layer(imported)})")
    assert not upward, "\n".join(upward)


def test_the_allowed_exception_stays_pure():
    imports = _imports(REPO / "secure_fedsa" / "secagg" / "threshold.py")
    assert {i for i in imports if i.startswith("secure_fedsa")} <= {
        "secure_fedsa.errors",
        "secure_fedsa.errors.ConfigError",
    }


def test_only_the_flower_transport_imports_flower_and_the_server_no_site_code():
    modules = _modules()
    for name, path in modules.items():
        imports = _imports(path)
        if not name.startswith("secure_fedsa.transports.flower"):
            assert not any(i == "flwr" or i.startswith("flwr.") for i in imports), name
        if name.startswith("secure_fedsa.server"):
            assert not any(i.startswith("secure_fedsa.site") for i in imports), name
