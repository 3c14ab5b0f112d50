"""The layout is checked, not remembered: the import contracts in pyproject.toml
hold (`make test` runs lint-imports too), breaking any of them fails, and every
package says what it holds and is drawn in the README's Layout section."""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "validator_service", "thumbnail_service", "protos")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # --no-cache: grimp's cache is keyed on modification times, which a copy made
    # within the same second as its edit can share.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def copy_of_the_project(tmp_path_factory) -> Path:
    """The four packages' modules and pyproject.toml, to break on purpose."""
    root = tmp_path_factory.mktemp("layout")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package,
                        ignore=lambda folder, names: [n for n in names if not (
                            n.endswith(".py") or (Path(folder) / n).is_dir()) or n == "__pycache__"])
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


BREAKS = {
    # importer module, the import added to it, the contract that must catch it
    "storage reaching up into a route": (
        "gateway/storage/expiry.py", "from gateway.http import files", "gateway's layers"),
    "metadata reaching up into tus": (
        "gateway/metadata/accounts.py", "import gateway.tus.store", "gateway's layers"),
    "the pipeline reaching up into who is asking": (
        "gateway/ingest/pipeline.py", "from gateway.auth.quotas import quota", "gateway's layers"),
    "a validator rule's helper reaching up into the servicer": (
        "validator_service/fileview.py", "from validator_service import servicer", "validator's layers"),
    "the thumbnail's incoming file reaching up into the server": (
        "thumbnail_service/incoming.py", "import thumbnail_service.server", "thumbnail service's layers"),
    "two modules of one package importing each other": (
        "validator_service/types.py", "from validator_service import policy", "No import cycle"),
    "a cycle inside a gateway sub-package": (
        "gateway/tus/protocol.py", "from gateway.tus import routes", "No import cycle"),
    "the validator importing the gateway": (
        "validator_service/pipeline.py", "import gateway.config", "share only protos"),
    "the thumbnail service importing the validator": (
        "thumbnail_service/renderers.py", "from validator_service import fileview", "share only protos"),
    "protos importing a service": (
        "protos/errors.py", "from thumbnail_service import config", "protos (messages"),
}


@pytest.mark.parametrize("case", BREAKS)
def test_breaking_a_contract_fails(copy_of_the_project, case):
    module, line, contract = BREAKS[case]
    path = copy_of_the_project / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{line}  # added by tests/test_layout.py\n")
        result = lint_imports(copy_of_the_project)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    broken = result.stdout[result.stdout.index("Broken contracts"):]
    assert contract in broken, broken
    importer = module[:-len(".py")].replace("/", ".")
    assert importer in broken or importer.rpartition(".")[2] in broken, broken


def subpackages() -> list[Path]:
    return sorted(p.parent for package in PACKAGES for p in (ROOT / package).rglob("__init__.py")
                  if p.parent != ROOT / package and "__pycache__" not in p.parts)


def test_every_subpackage_says_what_it_holds_and_what_it_may_use():
    found = subpackages()
    assert len(found) >= 8, "the sub-packages are no longer found"
    for folder in found:
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 15, f"{folder.relative_to(ROOT)}/__init__.py needs a docstring"


def test_the_readme_layout_names_every_package_of_the_gateway():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Layout"):]
    section = section[:section.index("\n## ", 1)]
    for folder in subpackages():
        name = folder.relative_to(ROOT).as_posix()
        if name.startswith("gateway/"):
            assert re.search(rf"\b{re.escape(folder.name)}/", section), f"README Layout does not show {name}/"


def test_both_grpc_services_have_the_same_shape():
    shape = {"__init__.py", "__main__.py", "config.py", "hookspecs.py", "metrics.py", "server.py",
             "servicer.py", "types.py"}
    for service in ("validator_service", "thumbnail_service"):
        present = {p.name for p in (ROOT / service).glob("*.py")}
        assert shape <= present, f"{service} lacks {sorted(shape - present)}"
        server = (ROOT / service / "server.py").read_text()
        assert "def create_server(" in server and "def serve(" in server and "DEFAULT_PLUGINS" in server
