"""setup.cfg declares what the package imports, and the installed versions meet its floors.

Every third-party module that ``sr_cli/`` imports (found with ``ast``, imports inside functions
included) and every module a ``_target_`` in ``conf/`` names must come from a distribution that
``install_requires`` declares (``onnx``/``onnxruntime``: the ``onnx`` extra). A package that is
only present because something else pulled it in (``torchmetrics`` came with pytorch-lightning)
fails here.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
#: Modules imported only where the extra that brings them is installed.
OPTIONAL = {"onnx": "onnx", "onnxruntime": "onnx", "onnxscript": "onnx"}


def requirements() -> dict[str, list[Requirement]]:
    """``{"install_requires": [...], "<extra>": [...]}`` from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def parse(text: str) -> list[Requirement]:
        lines = (line.split("#")[0].strip() for line in text.splitlines())
        return [Requirement(line) for line in lines if line]

    out = {"install_requires": parse(cfg["options"]["install_requires"])}
    for extra, text in cfg["options.extras_require"].items():
        out[extra] = parse(text)
    return out


def third_party_imports() -> dict[str, str]:
    """``{top-level module: a file that imports it}`` for ``sr_cli/`` and ``conf/`` targets."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "sr_cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "conf").rglob("*.yaml")):
        for target in re.findall(r"_target_:\s*([\w.]+)", path.read_text()):
            found.setdefault(target.split(".")[0], str(path.relative_to(ROOT)))
    return {
        mod: where
        for mod, where in found.items()
        if mod not in sys.stdlib_module_names and mod not in ("sr_cli", "__future__")
    }


def test_every_imported_package_is_declared():
    reqs = requirements()
    declared = {canonicalize_name(r.name) for r in reqs["install_requires"]}
    extras = {x: {canonicalize_name(r.name) for r in rs} for x, rs in reqs.items()}
    owners = md.packages_distributions()
    missing = []
    for module, where in sorted(third_party_imports().items()):
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        allowed = declared | extras.get(OPTIONAL.get(module, ""), set())
        if not dists:
            missing.append(f"{module} ({where}): not installed")
        elif not dists & allowed:
            missing.append(f"{module} ({where}): from {sorted(dists)}, not in setup.cfg")
    assert not missing, "undeclared imports:\n" + "\n".join(missing)


def test_installed_versions_meet_every_floor():
    """The floors are the versions tested together; an older install is not one of them."""
    below = []
    for extra, reqs in requirements().items():
        for req in reqs:
            try:
                installed = md.version(req.name)
            except md.PackageNotFoundError:
                if extra == "install_requires":
                    below.append(f"{req.name}: not installed")
                continue
            if not req.specifier.contains(Version(installed), prereleases=True):
                below.append(f"{req} ({extra}): installed {installed}")
            floors = [s.version for s in req.specifier if s.operator == ">="]
            assert floors, f"{req} ({extra}) has no floor (>=)"
    assert not below, "\n".join(below)


def test_adan_pytorch_is_gone():
    names = {canonicalize_name(r.name) for rs in requirements().values() for r in rs}
    assert "adan-pytorch" not in names and "pytorch-optimizer" in names
    assert "adan_pytorch" not in third_party_imports()


@pytest.mark.parametrize("name", ["torchmetrics", "onnxscript", "pytorch-optimizer"])
def test_named_packages_are_declared(name):
    reqs = requirements()
    where = "onnx" if name == "onnxscript" else "install_requires"
    assert name in {canonicalize_name(r.name) for r in reqs[where]}


def test_config_targets_are_scanned():
    assert third_party_imports().get("pytorch_optimizer", "").startswith("conf/optim/")
