"""Make a new plugin package: ``python -m protos.scaffold my-rules`` writes ``my-rules/``
with a pyproject (its entry point in the ``upload_service`` group), a module with a rule that
refuses files holding a word, a README, and a passing test that runs the rule in a real
validator (the ``upload_validator`` fixture). ``pip install ./my-rules`` and restart the
services: they load it. Nothing is overwritten."""
from __future__ import annotations

import argparse
import importlib.util
import keyword
import re
import sys
from pathlib import Path

PYPROJECT = '''[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A plugin for upload-service."
requires-python = ">=3.11"
# upload-service itself is not a dependency here: the plugin runs inside its services.

# How the services find the plugin once it is installed (README "Writing plugins").
[project.entry-points.upload_service]
{module} = "{module}"

[tool.setuptools]
py-modules = ["{module}"]
'''

MODULE = '''"""{dist}: a rule for upload-service's validator."""
from protos.plugins import hookimpl
from validator_service.hookspecs import Rejection

WORD = b"forbidden"


@hookimpl
def upload_check(file):
    """Refuse a file whose first 64 KiB hold WORD (a whole-file rule sees every byte:
    README "Whole-file rules")."""
    if WORD in file.head(64 * 1024):
        return Rejection("{module}_word", "This file holds a word this service does not take.")
    return None
'''

TEST = '''import {module}


def test_a_file_holding_the_word_is_refused(upload_validator):
    verdict = upload_validator({module}).check("notes.txt", b"a forbidden word\\n")
    assert verdict.reasons[0].code == "{module}_word"


def test_other_files_pass(upload_validator):
    assert upload_validator({module}).check("notes.txt", b"plain words\\n").accepted
'''

README = '''# {dist}

A plugin for upload-service. Test it (with upload-service installed beside it):

    pip install -e .
    python -m pytest

Then install it where the services run and restart them; each logs the plugins it loaded.
'''


# Its rule's code is "<module>_word", and a rule's code is cut at 64 characters.
MAX_NAME = 40


def names(name: str) -> tuple[str, str]:
    """(distribution name, module name) for ``name``; SystemExit with a sentence if it will not do."""
    dist = name.strip().lower()
    module = re.sub(r"[^0-9a-z]+", "_", dist).strip("_")
    if (not re.fullmatch(r"[a-z]([0-9a-z_-]*[0-9a-z])?", dist) or len(dist) > MAX_NAME
            or keyword.iskeyword(module)):
        raise SystemExit(f"{name!r} will not do as a plugin's name: use letters, digits, - and _, starting with "
                         f"a letter and ending with a letter or digit, at most {MAX_NAME} (e.g. my-rules).")
    if importlib.util.find_spec(module) is not None:
        raise SystemExit(f"{name!r} will not do as a plugin's name: its module, {module}, would be confused with "
                         "one that exists already. Choose another name.")
    return dist, module


def scaffold(name: str, where: Path) -> Path:
    dist, module = names(name)
    root = where / dist
    if root.exists():
        raise SystemExit(f"{root} exists already: nothing was written.")
    (root / "tests").mkdir(parents=True)
    values = {"dist": dist, "module": module}
    (root / "pyproject.toml").write_text(PYPROJECT.format(**values))
    (root / f"{module}.py").write_text(MODULE.format(**values))
    (root / "tests" / f"test_{module}.py").write_text(TEST.format(**values))
    (root / "README.md").write_text(README.format(**values))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m protos.scaffold", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="the plugin's name, e.g. my-rules")
    parser.add_argument("--dir", type=Path, default=Path.cwd(), help="where to make it (default: here)")
    args = parser.parse_args(argv)
    root = scaffold(args.name, args.dir)
    # This interpreter's pip and pytest: the environment upload-service is installed in.
    print(f"Made {root}: cd {root} && {sys.executable} -m pip install -e . && {sys.executable} -m pytest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
