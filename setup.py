"""setuptools' own build (pyproject.toml says everything else), with one step before it: the
protos' Python modules are generated (protos/generate.py, by the grpcio-tools that
pyproject.toml's [build-system] pins), since git holds only the .proto files.

So a fresh clone installs as it is, without `make`: `pip install ".[validator]"`, or
`pip install "upload-service[validator] @ git+..."`, and the images' `pip install -e`. grpcio-tools
lives in the isolated build environment only: it never reaches a service's venv."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
GENERATE = ROOT / "protos" / "generate.py"


class BuildPyWithProtos(build_py):
    """build_py (which an editable install runs too) after protos.generate."""

    def run(self) -> None:
        # Loaded by path, not imported as protos.generate: the package is not importable yet.
        spec = importlib.util.spec_from_file_location("_upload_protos_generate", GENERATE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        try:
            module.generate()
        except ImportError as error:
            if error.name != "grpc_tools":
                raise
            # --no-build-isolation in an environment without grpcio-tools.
            raise SystemExit("Building upload-service generates the protos' Python code with grpcio-tools, "
                             "which is missing: build with pip's build isolation (the default), or install "
                             "grpcio-tools first (pyproject.toml's [build-system] says which).") from error
        super().run()


setup(cmdclass={"build_py": BuildPyWithProtos})
