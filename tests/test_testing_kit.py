"""The testing kit plugin authors get with the project (validator_service/testing.py,
thumbnail_service/testing.py, gateway/testing.py, registered as pytest11 entry points):
its fixtures used here as a plugin's tests would use them, and once from a pytest run outside
this repository, finding them through the installed entry points alone."""
from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time

from protos.plugins import hookimpl
from tests.plugin_modules import eicar, text_cards
from tests.processes import ROOT


def test_a_rule_plugins_first_test_is_five_lines(upload_validator):
    validator = upload_validator(eicar)
    verdict = validator.check("a.txt", eicar.EICAR)
    assert verdict.reasons[0].code == "malware"
    assert (verdict.decisions[-1].rule, verdict.decisions[-1].outcome) == ("tests.plugin_modules.eicar", "reject")


def test_the_validator_fixture_judges_every_byte_and_keeps_the_tests_environment_out(upload_validator,
                                                                                      monkeypatch):
    monkeypatch.setenv("MAX_FILE_SIZE", "10")  # the test process's: not the validator's
    validator = upload_validator(env={"MAX_FILE_SIZE": "1000"})
    assert validator.policy().max_file_size == 1000
    data = b"plain words\n" * 60
    verdict = validator.check("notes.txt", data)
    assert verdict.accepted and verdict.bytes_read == len(data)
    assert validator.check("notes.txt", data * 2).reasons[0].code == "file_too_large"


def test_a_genuine_sample_of_every_allowed_type_is_accepted(upload_validator, upload_sample):
    from validator_service.samples import ALLOWED_EXTENSIONS

    validator = upload_validator()
    for ext in ALLOWED_EXTENSIONS:
        verdict = validator.check(f"sample.{ext}", upload_sample(ext))
        assert verdict.accepted, (ext, verdict.reasons)


def test_the_thumbnail_fixture_renders_through_the_service(upload_thumbnailer):
    thumbnail = upload_thumbnailer(text_cards).render(b"line one\n", "text/plain", box=(100, 100))
    assert thumbnail.mime_type == "image/jpeg" and (thumbnail.width, thumbnail.height) == (100, 80)


class Remembers:
    """A gateway plugin: what it was told of stored files."""

    def __init__(self):
        self.stored = []

    @hookimpl
    def upload_file_stored(self, record):
        self.stored.append(record["original_name"])


def test_the_gateway_fixture_stores_and_delivers_events(upload_gateway):
    plugin = Remembers()
    client = upload_gateway(eicar, plugin)
    assert client.post("/upload", data={"file": (io.BytesIO(b"hello\n"), "a.txt")}).status_code == 201
    refused = client.post("/upload", data={"file": (io.BytesIO(eicar.EICAR), "b.txt")})
    assert refused.status_code == 422 and refused.get_json()["rule"] == "tests.plugin_modules.eicar"
    deadline = time.monotonic() + 10
    while not plugin.stored and time.monotonic() < deadline:
        time.sleep(0.05)
    assert plugin.stored == ["a.txt"]


def test_the_gateway_fixture_keeps_the_tests_environment_out(upload_gateway, monkeypatch, tmp_path):
    # A plugin author's shell may name a real database, a bucket, accounts: none of it is used.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'production.db'}")
    monkeypatch.setenv("AUTH", "token")
    client = upload_gateway()
    assert client.post("/upload", data={"file": (io.BytesIO(b"hello\n"), "a.txt")}).status_code == 201
    assert not (tmp_path / "production.db").exists()


def test_a_plugin_project_outside_this_repository_finds_the_fixtures(tmp_path):
    (tmp_path / "no_pdfs.py").write_text(textwrap.dedent('''
        from protos.plugins import hookimpl
        from validator_service.hookspecs import Rejection

        @hookimpl
        def upload_check(file):
            if file.extension == "pdf":
                return Rejection("no_pdfs", "PDFs are not taken here.")
    '''))
    (tmp_path / "test_no_pdfs.py").write_text(textwrap.dedent('''
        import no_pdfs

        def test_pdfs_are_refused(upload_validator):
            verdict = upload_validator(no_pdfs).check("a.pdf", b"%PDF-1.4\\n%%EOF\\n")
            assert verdict.reasons[0].code == "no_pdfs"
    '''))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_no_pdfs.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
