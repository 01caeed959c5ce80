"""The layers, read off every module's imports: nothing of ours may point upwards.

    sdk      -> (nothing of ours)
    gateway  -> shared, protos
    services -> shared, protos        (each service on its own: not another service)
    training -> shared, protos
    cli      -> anything
    shared   -> protos
    protos   -> (nothing of ours)
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"sdk": set(), "gateway": {"shared", "protos"}, "services": {"shared", "protos"},
           "training": {"shared", "protos"}, "cli": {"*"}, "shared": {"protos"}, "protos": set()}


def packages() -> dict[str, str]:
    """Each of our top-level import names -> its layer, from where its folder lies."""
    found = {}
    for layer in ALLOWED:
        base = ROOT / layer if layer != "protos" else ROOT / "protos" / "python"
        for init in base.glob("**/__init__.py"):
            top = init.parent
            while (top.parent / "__init__.py").exists():
                top = top.parent
            if ".venv" not in top.parts and top.name.startswith("omniforge"):
                found[top.name] = layer
    return found


def imported(source: str) -> set[str]:
    """Top-level names of every absolute import in a module, wherever it stands (functions too)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def violations(layer: str, package: str, source: str, owners: dict[str, str]) -> list[str]:
    allowed = ALLOWED[layer]
    out = []
    for name in sorted(imported(source)):
        target = owners.get(name)
        if target is None or name == package or "*" in allowed:
            continue
        if target not in allowed:
            out.append(f"{layer} ({package}) imports {name} ({target})")
        elif target == layer:              # a service importing another service
            out.append(f"{layer} ({package}) imports {name}, another {layer} package")
    return out


def modules():
    owners = packages()
    for package, layer in owners.items():
        base = ROOT / layer if layer != "protos" else ROOT / "protos" / "python"
        for path in base.glob(f"**/{package}/**/*.py"):
            if ".venv" not in path.parts:
                yield path, package, layer


def test_every_import_points_down_the_layers():
    owners = packages()
    assert {"omniforge_sdk", "omniforge_gateway", "omniforge_text", "omniforge_training", "omniforge_cli",
            "omniforge_shared", "omniforge_proto"} <= set(owners)
    found = [f"{path.relative_to(ROOT)}: {v}" for path, package, layer in modules()
             for v in violations(layer, package, path.read_text(), owners)]
    assert found == []


@pytest.mark.parametrize("layer, package, source", [
    # the three back-edges this test was written against
    ("shared", "omniforge_shared", "def f():\n    from omniforge_training.data.dataset import build_dataset\n"),
    ("gateway", "omniforge_gateway", "from omniforge_training.jobs.store import JobStore\n"),
    ("shared", "omniforge_shared", "import omniforge_training.export_onnx\n"),
    # and others the picture forbids
    ("sdk", "omniforge_sdk", "from omniforge_shared.settings import load_settings\n"),
    ("services", "omniforge_text", "from omniforge_gateway.errors import ApiError\n"),
    ("training", "omniforge_training", "from omniforge_text.engine import TextEngine\n"),
])
def test_a_back_edge_is_caught(layer, package, source):
    assert violations(layer, package, source, packages())


def test_a_service_may_not_import_another_service():
    owners = {**packages(), "omniforge_image": "services"}
    assert violations("services", "omniforge_text", "import omniforge_image\n", owners)


@pytest.mark.parametrize("module, forbidden", [
    ("omniforge_gateway.app", ("omniforge_training", "torch")),
    ("omniforge_text.server", ("omniforge_training", "torch")),
])
def test_the_serving_path_loads_no_training_code_and_no_torch(module, forbidden):
    probe = (f"import sys, {module}; "
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(forbidden)!r}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
