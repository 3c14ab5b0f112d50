"""The validator, for a plugin's own tests: a pytest plugin installed with the project (entry
point ``pytest11``), so any test can ask for the ``upload_validator`` fixture with nothing to
import or configure.

    def test_eicar_is_refused(upload_validator):
        validator = upload_validator(my_plugin)
        verdict = validator.check("a.txt", b"X5O!P%@AP[4\\\\PZX54(P^)7CC)7}$EICAR")
        assert verdict.reasons[0].code == "malware"

``upload_sample(ext)`` gives a genuine file of each type allowed by default (bytes).
``upload_validator(*plugins, env=None)`` starts a real validator (gRPC, on a free port of
127.0.0.1) with the built-in rules, the installed plugins and ``plugins`` (modules or objects);
``env`` is its environment (settings such as MAX_FILE_SIZE, CLAMD_ADDRESS; none of the test
process's by default). It is stopped when the test ends. Imports are made when the fixture is
used, so that an install without the validator's extra still runs pytest.
"""
from __future__ import annotations

import pytest

from protos.testing import Running, starting

CHUNK = 64 * 1024


class RunningValidator(Running):
    """A started validator and a channel to it."""

    def __init__(self, plugins, env):
        from protos.upload.v1 import validator_pb2_grpc
        from validator_service.config import Settings
        from validator_service.server import create_plugins, create_server

        super().__init__(*create_server("127.0.0.1:0", pm=create_plugins(env=env, extra_plugins=plugins),
                                        settings=Settings.from_env(env)))
        self.stub = validator_pb2_grpc.ValidatorStub(self.channel)

    def check(self, name: str, data: bytes, declared_type: str = "", timeout: float = 30.0):
        """The Verdict on a file named ``name`` holding ``data``, sent whole as an upload's bytes
        are (a Validate stream in 64 KiB chunks): every rule judges it, head and whole-file rules
        alike; ``verdict.decisions`` says what each rule decided, ``verdict.reasons`` why it was
        refused. A rule that fails raises grpc.RpcError (INTERNAL)."""
        from protos.streaming import file_info
        from protos.upload.v1 import validator_pb2

        def requests():
            yield validator_pb2.ValidateRequest(info=file_info(name, len(data), declared_type))
            for at in range(0, len(data), CHUNK):
                yield validator_pb2.ValidateRequest(chunk=data[at:at + CHUNK])
            yield validator_pb2.ValidateRequest(end=validator_pb2.FileEnd(size=len(data)))

        return self.stub.Validate(requests(), timeout=timeout)

    def policy(self, timeout: float = 5.0):
        """The policy in force: allowed types, limits, ``whole_file``."""
        from protos.upload.v1 import validator_pb2

        return self.stub.GetPolicy(validator_pb2.GetPolicyRequest(), timeout=timeout)



@pytest.fixture
def upload_validator():
    """Start a real validator with the plugins given: ``upload_validator(my_plugin, env={...})``."""
    yield from starting(RunningValidator)


@pytest.fixture
def upload_sample(tmp_path):
    """Genuine files of every type the validator allows by default, as bytes:
    ``upload_sample("docx")`` (jpg, jpeg, png, gif, webp, heic, heif, avif, svg, pdf, doc, docx,
    txt, csv, zip, rar, 7z, tar, gz, mp4, webm, mov; heic and heif need pillow-heif, 7z py7zr)."""
    from validator_service.samples import make_sample

    def sample(ext: str) -> bytes:
        return make_sample(ext, tmp_path / "upload-samples").read_bytes()

    return sample
