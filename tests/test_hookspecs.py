"""Meta-test: every hook is named, typed, documented and tested."""
from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from protos.plugins import PROJECT, SPEC_MODULES

ROOT = Path(__file__).resolve().parent.parent


def all_hookspecs():
    for module_name in SPEC_MODULES:
        module = importlib.import_module(module_name)
        for name, func in inspect.getmembers(module, inspect.isfunction):
            if hasattr(func, f"{PROJECT}_spec"):
                yield pytest.param(module_name, name, func, id=name)


HOOKS = list(all_hookspecs())


def test_there_are_hooks():
    assert len(HOOKS) >= 5


@pytest.mark.parametrize("module_name,name,func", HOOKS)
def test_hook_is_prefixed_typed_and_documented(module_name, name, func):
    assert name.startswith("upload_")
    assert "return" in func.__annotations__, f"{name} has no return type"
    doc = inspect.getdoc(func) or ""
    assert re.search(r"\b(Registration|Decision|Notification) hook\b", doc), f"{name}: say what kind of hook"
    assert "called" in doc, f"{name}: say when it is called"
    assert "Example::" in doc, f"{name}: give an example"


@pytest.mark.parametrize("module_name,name,func", HOOKS)
def test_hook_is_in_the_readme(module_name, name, func):
    assert f"`{name}`" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("module_name,name,func", HOOKS)
def test_hook_has_a_test(module_name, name, func):
    tests = [p for p in (ROOT / "tests").rglob("*.py") if p.name != Path(__file__).name]
    assert any(f"def {name}(" in p.read_text() for p in tests), f"no test implements {name}"


# What no service's hookspecs may pull in: every service's plugin manager imports all of them,
# and an install of one service has only its own dependencies (Flask and SQLAlchemy are the
# gateway's, Pillow and libmagic the services').
NOT_IN_HOOKSPECS = ("flask", "werkzeug", "sqlalchemy", "alembic", "gunicorn", "boto3", "botocore", "PIL",
                    "magic", "grpc", "google.protobuf", "prometheus_client")

BLOCKING = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in BLOCKED or any(name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is blocked")
sys.meta_path.insert(0, Block())
import importlib
from protos.plugins import SPEC_MODULES, create_plugin_manager
for name in SPEC_MODULES:
    importlib.import_module(name)
pm = create_plugin_manager([], env={})
print(sorted(n for n in dir(pm.hook) if n.startswith("upload_")))
"""


def test_every_hookspec_module_imports_without_any_services_dependencies():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", BLOCKING, ",".join(NOT_IN_HOOKSPECS)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "'upload_file_stored'" in result.stdout and "'upload_check'" in result.stdout


PLUGIN_OF_EVERY_SERVICE = '''
from protos.plugins import hookimpl

@hookimpl
def upload_removed_file_types():
    return ["doc"]

@hookimpl
def upload_file_stored(record):
    pass
'''

ALONE = """
import sys
# The gateway and the thumbnail service are not installed here (the validator's image): forget
# the development install's finder, which would find them in the checkout.
sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import importlib.util
assert importlib.util.find_spec("gateway") is None and importlib.util.find_spec("thumbnail_service") is None
from protos.plugins import PluginLoadError, create_plugin_manager
from validator_service.rules import DEFAULT_PLUGINS
pm = create_plugin_manager(DEFAULT_PLUGINS, env={"UPLOAD_PLUGINS": "every_service"})
print("removed:", pm.hook.upload_removed_file_types())
try:
    create_plugin_manager(DEFAULT_PLUGINS, env={"UPLOAD_PLUGINS": "misspelt"})
except PluginLoadError as error:
    print("refused:", error)
"""


def test_a_service_installed_alone_loads_a_plugin_of_every_service(tmp_path):
    """As in deploy/validator.Dockerfile (protos and validator_service only): the
    hookspecs of the missing services are left out, a plugin that also implements
    their hooks loads, and a hook name nobody here knows is logged, not refused."""
    import shutil
    import subprocess
    import sys

    for package in ("protos", "validator_service"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "every_service.py").write_text(PLUGIN_OF_EVERY_SERVICE)
    (tmp_path / "misspelt.py").write_text("from protos.plugins import hookimpl\n\n@hookimpl\n"
                                         "def upload_chek(file):\n    pass\n")
    result = subprocess.run([sys.executable, "-c", ALONE], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "removed: [['doc']]" in result.stdout
    assert "refused:" not in result.stdout
    assert "upload_chek" in result.stderr and "not installed here" in result.stderr
