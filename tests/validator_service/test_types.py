"""Every allowed type is accepted when the file is genuine, and the detected
type is one the policy lists for its extension."""
from __future__ import annotations

import pytest

from protos.upload.v1 import validator_pb2, validator_pb2_grpc
from tests.conftest import validate
from tests.samples import ALLOWED_EXTENSIONS, make_sample
from validator_service.rules.filetypes import DEFAULT_TYPES

CANONICAL = {t.extension: t.mime_types[0] for t in DEFAULT_TYPES}


@pytest.mark.parametrize("ext", ALLOWED_EXTENSIONS)
def test_genuine_sample_is_accepted(validator, tmp_path, ext):
    data = make_sample(ext, tmp_path).read_bytes()
    verdict = validate(validator.channel, f"holiday report.{ext}", data)
    assert verdict.accepted, verdict.reasons
    assert verdict.extension == ext
    # On this machine's libmagic every sample gets its canonical type, not a fallback alias.
    assert verdict.detected_type == CANONICAL[ext]


@pytest.mark.parametrize("ext", ALLOWED_EXTENSIONS)
def test_upper_case_extension_is_the_same_type(validator, tmp_path, ext):
    data = make_sample(ext, tmp_path).read_bytes()
    assert validate(validator.channel, f"SCAN.{ext.upper()}", data).accepted


def test_rar4_is_accepted(validator):
    from tests.samples import FIXTURES_DIR
    data = (FIXTURES_DIR / "sample-rar4.rar").read_bytes()
    assert validate(validator.channel, "old.rar", data).accepted


def test_images_report_their_dimensions(validator, tmp_path):
    verdict = validate(validator.channel, "photo.jpg", make_sample("jpg", tmp_path).read_bytes())
    assert (verdict.width, verdict.height) == (64, 48)
    assert verdict.is_image


def test_policy_lists_the_contracts_types(validator):
    policy = validator_pb2_grpc.ValidatorStub(validator.channel).GetPolicy(
        validator_pb2.GetPolicyRequest())
    assert sorted(t.extension for t in policy.allowed) == sorted(ALLOWED_EXTENSIONS)
    assert policy.max_file_size == 50 * 1024 * 1024
    assert policy.max_image_dimension == 5000
    csv = next(t for t in policy.allowed if t.extension == "csv")
    assert list(csv.mime_types)[0] == "text/csv"
