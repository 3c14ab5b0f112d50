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
