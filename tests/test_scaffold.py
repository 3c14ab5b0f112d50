"""`python -m protos.scaffold`: a new plugin package that installs, loads and passes its own test
as it is (the README's "Writing plugins": from the scaffold to a refusing rule)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from protos.scaffold import names, scaffold
from tests.processes import ROOT


def test_a_scaffolded_plugin_installs_loads_and_passes_its_test(tmp_path):
    made = subprocess.run([sys.executable, "-m", "protos.scaffold", "my-rules", "--dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    root = tmp_path / "my-rules"
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "my_rules.py", "pyproject.toml", "tests"]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(root)], check=True, capture_output=True, timeout=300)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{ROOT}"}
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=root, env=env,
                            capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0 and "2 passed" in tested.stdout, tested.stdout + tested.stderr
    # Installed, the validator finds it by its entry point, with nothing named anywhere.
    loaded = subprocess.run([sys.executable, "-c", "from validator_service.server import create_plugins; "
                             "print(create_plugins(env={}).has_plugin('my_rules'))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert loaded.stdout.strip() == "True", loaded.stderr
    # Its rule, in lines: the README's measure.
    code = [line for line in (root / "my_rules.py").read_text().splitlines() if line.strip()]
    test = (root / "tests" / "test_my_rules.py").read_text().split("\n\n\n")[1].strip().splitlines()
    assert len(code) < 20 and len(test) <= 3


@pytest.mark.parametrize("name", ["1st", "my rules", "class", "", "-x", "my-rules-", "json", "gateway", "a" * 41])
def test_a_name_that_will_not_do_is_refused_with_a_sentence(name):
    with pytest.raises(SystemExit, match="will not do"):
        names(name)


def test_nothing_is_overwritten(tmp_path):
    scaffold("mine", tmp_path)
    (tmp_path / "mine" / "mine.py").write_text("# my work\n")
    with pytest.raises(SystemExit, match="exists already"):
        scaffold("mine", tmp_path)
    assert (tmp_path / "mine" / "mine.py").read_text() == "# my work\n"
