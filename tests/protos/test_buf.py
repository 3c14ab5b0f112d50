"""The protos as a product: buf's lint and breaking-change checks hold, and they bite; the files
compile outside this repository's layout."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
BUF = ROOT / "node_modules" / ".bin" / "buf"
RELEASES = sorted((PROTOS / "releases").glob("upload-v1-*.binpb"),
                  key=lambda p: tuple(int(n) for n in re.findall(r"\d+", p.name.removeprefix("upload-v1-"))))


def buf(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert BUF.exists(), "buf is missing: make install runs npm ci, which installs @bufbuild/buf"
    return subprocess.run([str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy(tmp_path) -> Path:
    """The module (buf.yaml and upload/v1/*.proto) copied where a test may change it."""
    target = tmp_path / "protos"
    (target / "upload" / "v1").mkdir(parents=True)
    shutil.copy(PROTOS / "buf.yaml", target)
    for proto in (PROTOS / "upload" / "v1").glob("*.proto"):
        shutil.copy(proto, target / "upload" / "v1")
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_shipped_protos_pass_buf_lint():
    result = buf("lint", cwd=PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_refuses_a_field_without_a_comment(copy):
    edit(copy / "upload/v1/validator.proto", "  // Name of the plugin (rule) that produced it.\n", "")
    result = buf("lint", cwd=copy)
    assert result.returncode != 0
    assert 'Field "rule" should have a non-empty comment' in result.stdout


def test_the_protos_break_nothing_of_the_last_release():
    result = buf("breaking", "--against", f"releases/{RELEASES[-1].name}", cwd=PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("old, new, complaint", [
    ("int64 bytes_read = 7;", "int64 bytes_read = 11;", 'field "7" with name "bytes_read" on message "Verdict" was deleted'),
    ("string extension = 6;", "string file_extension = 6;", 'Field "6" on message "Verdict" changed name'),
    ("int32 max_width = 3;", "int64 max_width = 3;", 'changed type from "int32" to "int64"'),
    ("rpc GetPolicy(GetPolicyRequest) returns (Policy);", "", 'RPC "GetPolicy" on service "Validator" was deleted'),
])
def test_buf_breaking_refuses_a_change_that_breaks_callers(copy, old, new, complaint):
    target = "thumbnail.proto" if "max_width" in old else "validator.proto"
    edit(copy / "upload/v1" / target, old, new)
    result = buf("breaking", "--against", str(RELEASES[-1]), cwd=copy)
    assert result.returncode != 0
    assert complaint in result.stdout


def test_the_move_to_bufs_layout_kept_the_wire_and_json_of_release_0_1_0():
    # 0.1.0 had the files at protos/*.proto (import "protos/common.proto"): generated code
    # changed its paths, the bytes on the wire and the JSON names did not.
    assert RELEASES[0].name == "upload-v1-0.1.0.binpb"
    result = buf("breaking", "--against", f"releases/{RELEASES[0].name}",
                 "--config", '{"version": "v2", "breaking": {"use": ["WIRE_JSON"]}}', cwd=PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_changelog_names_the_last_release():
    changelog = (PROTOS / "CHANGELOG.md").read_text()
    newest = RELEASES[-1].name.removeprefix("upload-v1-").removesuffix(".binpb")
    headings = re.findall(r"^## (\d+\.\d+\.\d+)", changelog, re.MULTILINE)
    assert headings and headings[0] == newest, "the CHANGELOG's newest entry is the newest release image"
    assert {p.name.removeprefix("upload-v1-").removesuffix(".binpb") for p in RELEASES} <= set(headings)


def test_the_protos_compile_alone_outside_this_repository(tmp_path):
    # Another team copies upload/v1/*.proto into its own tree: nothing refers to this repository.
    (tmp_path / "vendor" / "upload" / "v1").mkdir(parents=True)
    for proto in (PROTOS / "upload" / "v1").glob("*.proto"):
        shutil.copy(proto, tmp_path / "vendor" / "upload" / "v1")
    out = tmp_path / "out"
    out.mkdir()
    files = sorted(str(p.relative_to(tmp_path / "vendor")) for p in (tmp_path / "vendor").rglob("*.proto"))
    assert files == ["upload/v1/common.proto", "upload/v1/thumbnail.proto", "upload/v1/validator.proto"]
    code = protoc.main(["protoc", f"-I{tmp_path / 'vendor'}", f"--python_out={out}", f"--descriptor_set_out={out / 'set.pb'}",
                        *[str(tmp_path / "vendor" / f) for f in files]])
    assert code == 0
    assert (out / "upload" / "v1" / "validator_pb2.py").exists()


@pytest.mark.parametrize("option", ["go_package", "java_package", "java_multiple_files", "csharp_namespace",
                                    "php_namespace", "ruby_package", "objc_class_prefix"])
def test_every_file_names_its_package_for_each_language(option):
    for proto in (PROTOS / "upload" / "v1").glob("*.proto"):
        assert re.search(rf"^option {option} = ", proto.read_text(), re.MULTILINE), f"{proto.name}: no {option}"
