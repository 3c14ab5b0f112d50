"""Plugins change the rules: add and remove types, refuse with their own
reason, add renderers, and are found through entry points and UPLOAD_PLUGINS."""
from __future__ import annotations

import logging
import subprocess
import sys

import grpc
import pytest
from PIL import Image

from protos.plugins import PluginLoadError, hookimpl
from tests.conftest import free_port, render, validate
from tests.images import encode
from tests.plugin_modules.eicar import EICAR
from tests.processes import ROOT, service_process
from tests.samples import make_sample
from thumbnail_service.hookspecs import Renderer
from thumbnail_service import server as thumbnail_server
from thumbnail_service.server import create_plugins as thumbnail_plugins
from validator_service.hookspecs import FileType, Rejection
from validator_service.server import create_plugins as validator_plugins

PLUGIN_DIR = ROOT / "deploy" / "plugins" / "textfiles"
LATIN1_TEXT = "Grüße aus Köln\n".encode("latin-1")


class AddsHeic:
    @hookimpl
    def upload_file_types(self):
        yield FileType("heic", ("image/heic",))


class RemovesZip:
    @hookimpl
    def upload_removed_file_types(self):
        return ["ZIP"]


class RefusesSecrets:
    @hookimpl
    def upload_check(self, file, policy):
        if "secret" in file.original_name.lower():
            return Rejection("named_secret", "Files named 'secret' are not accepted here.")
        return None


class Crashes:
    @hookimpl
    def upload_check(self, file):
        raise RuntimeError("plugin bug")


class Watches:
    def __init__(self):
        self.seen = []

    @hookimpl
    def upload_validated(self, file, accepted, reasons):
        self.seen.append((file.original_name, accepted, [r.code for r in reasons]))


class BrokenWatcher:
    @hookimpl
    def upload_validated(self, file, accepted, reasons):
        raise RuntimeError("notification bug")


def test_plugin_adds_a_type(start_validator):
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[AddsHeic()]))
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    verdict = validate(running.channel, "photo.heic", heic)
    assert verdict.detected_type == "image/heic" and verdict.accepted


def test_plugin_removes_a_type(start_validator, tmp_path):
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[RemovesZip()]))
    verdict = validate(running.channel, "a.zip", make_sample("zip", tmp_path).read_bytes())
    assert verdict.reasons[0].code == "extension_not_allowed"
    assert "zip," not in verdict.reasons[0].message


def test_plugin_refusal_reaches_the_client(start_validator):
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[RefusesSecrets()]))
    verdict = validate(running.channel, "SECRET-plans.txt", b"hello\n")
    assert not verdict.accepted
    assert verdict.reasons[0].code == "named_secret"
    assert verdict.reasons[0].message == "Files named 'secret' are not accepted here."
    assert verdict.reasons[0].rule == "tests.test_plugins.RefusesSecrets"


def test_built_in_rules_run_before_plugin_rules(start_validator):
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[RefusesSecrets()]))
    verdict = validate(running.channel, "secret.exe", b"MZ\x90\x00")
    assert verdict.reasons[0].code == "extension_not_allowed"


def test_crashing_rule_fails_closed_with_internal(start_validator):
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[Crashes()]))
    with pytest.raises(grpc.RpcError) as info:
        validate(running.channel, "a.txt", b"hello\n")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "not accepted" in info.value.details()


class AnswersBadly:
    def __init__(self, answer):
        self.answer = answer

    @hookimpl
    def upload_check(self, file, policy):
        return self.answer


@pytest.mark.parametrize("answer", [False, "no", 0, {"code": "x"}])
def test_a_rule_answering_neither_a_rejection_nor_none_fails_closed_and_is_named(start_validator, caplog, answer):
    # False or a string went on into the pipeline: AttributeError, and a traceback naming no plugin.
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[AnswersBadly(answer)]))
    with caplog.at_level(logging.ERROR, logger="upload.validator"):
        with pytest.raises(grpc.RpcError) as info:
            validate(running.channel, "a.txt", b"hello\n")
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "AnswersBadly" in info.value.details() and "not accepted" in info.value.details()
    [line] = [r for r in caplog.records if "AnswersBadly" in r.getMessage()]
    assert "neither a Rejection nor None" in line.getMessage() and line.exc_info is None


def test_a_refusal_is_logged_with_its_code_and_rule(start_validator, caplog):
    running = start_validator()
    with caplog.at_level(logging.INFO, logger="upload.validator"):
        verdict = validate(running.channel, "photo.jpg", b"MZ\x90\x00" + bytes(100))
    assert verdict.reasons[0].code == "executable_content"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused 'photo.jpg'")]
    assert "executable_content" in line and "validator_service.rules.content" in line


def test_a_crashing_rule_is_named_in_the_log(start_validator, caplog):
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[Crashes()]))
    with caplog.at_level(logging.ERROR, logger="upload.validator"):
        with pytest.raises(grpc.RpcError):
            validate(running.channel, "a.txt", b"hello\n")
    assert any("Crashes" in r.getMessage() and r.exc_info for r in caplog.records)


def test_notification_hook_sees_every_verdict(start_validator):
    watcher = Watches()
    running = start_validator(pm=validator_plugins(env={}, extra_plugins=[watcher]))
    validate(running.channel, "a.txt", b"hello\n")
    validate(running.channel, "b.exe", b"MZ")
    assert watcher.seen == [("a.txt", True, []), ("b.exe", False, ["extension_not_allowed"])]


def test_failing_notification_hook_never_fails_the_call(start_validator, caplog):
    watcher = Watches()
    pm = validator_plugins(env={}, extra_plugins=[BrokenWatcher(), watcher])
    running = start_validator(pm=pm)
    with caplog.at_level(logging.ERROR):
        assert validate(running.channel, "a.txt", b"hello\n").accepted
    assert watcher.seen  # the other watcher still ran
    assert "notification bug" in caplog.text


def test_upload_plugins_env_loads_modules_by_name(start_validator):
    pm = validator_plugins(env={"UPLOAD_PLUGINS": "tests.plugin_modules.eicar"})
    running = start_validator(pm=pm)
    verdict = validate(running.channel, "eicar.txt", EICAR + b"\n")
    assert verdict.reasons[0].code == "malware"
    assert verdict.reasons[0].rule == "tests.plugin_modules.eicar"


def test_unknown_plugin_module_stops_start_up():
    with pytest.raises(PluginLoadError, match="no_such_plugin"):
        validator_plugins(env={"UPLOAD_PLUGINS": "no_such_plugin"})


@pytest.mark.parametrize("kind", ["hookwrapper", "wrapper"])
def test_a_wrapper_on_a_hook_stops_start_up_naming_the_plugin(kind):
    # Accepted, it was never called: the pipeline calls the rules one by one.
    class Wrapping:
        @hookimpl(**{kind: True})
        def upload_check(self, file, policy):
            yield

    with pytest.raises(PluginLoadError, match="Wrapping.*upload_check.*wrapper"):
        validator_plugins(env={}, extra_plugins=[Wrapping()])


def test_misspelt_hook_stops_start_up():
    with pytest.raises(PluginLoadError, match="upload_chek"):
        validator_plugins(env={"UPLOAD_PLUGINS": "tests.plugin_modules.misspelt"})


# Renderers run in a process of their own per render, so they travel there by pickle:
# module-level functions, as the README says.
def render_solid(source, box):
    return Image.new("RGB", box, "purple")


def render_grey(source, box):
    return Image.new("L", (10, 10))


def test_plugin_adds_a_thumbnail_renderer(start_thumbnailer):
    class PdfCards:
        @hookimpl
        def upload_thumbnail_renderers(self):
            yield Renderer("pdf-card", ("application/pdf",), render_solid)

    running = start_thumbnailer(pm=thumbnail_plugins(env={}, extra_plugins=[PdfCards()]))
    reply = render(running.channel, b"%PDF-1.4 ...", "application/pdf")
    assert (reply.width, reply.height) == (200, 200)


def test_plugin_renderer_replaces_the_built_in_one(start_thumbnailer):
    class Grey:
        @hookimpl
        def upload_thumbnail_renderers(self):
            yield Renderer("grey", ("image/png",), render_grey)

    running = start_thumbnailer(pm=thumbnail_plugins(env={}, extra_plugins=[Grey()]))
    reply = render(running.channel, encode(Image.new("RGB", (500, 500)), "PNG"), "image/png")
    assert (reply.width, reply.height) == (10, 10)


def test_a_renderer_that_cannot_reach_the_render_process_is_refused_at_start():
    class Closure:
        @hookimpl
        def upload_thumbnail_renderers(self):
            yield Renderer("closure", ("image/png",), lambda source, box: Image.new("L", (10, 10)))

    with pytest.raises(PluginLoadError) as info:
        thumbnail_server.create_server("127.0.0.1:0", pm=thumbnail_plugins(env={}, extra_plugins=[Closure()]))
    assert "'closure'" in str(info.value) and "module-level function" in str(info.value)


# --- the shipped example plugin, installed for real ---

@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-install deploy/plugins/textfiles into a directory of its own, so only
    processes given that directory on PYTHONPATH see its entry point."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN_DIR)],
        check=True, capture_output=True,
    )
    assert list(target.glob("upload_textfiles-*.dist-info"))
    return {"PYTHONPATH": f"{target}:{ROOT}"}


def verdicts(env, tmp_path) -> dict[str, tuple[bool, str]]:
    port = free_port()
    files = {
        "notes.md": b"# Title\n\nSome *markdown* text.\n",
        "old.doc": make_sample("doc", tmp_path).read_bytes(),
        "latin1.txt": LATIN1_TEXT,
        "utf8.txt": "Grüße aus Köln\n".encode(),
    }
    with service_process("validator_service", "VALIDATOR_ADDR", port, env):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            out = {}
            for name, data in files.items():
                verdict = validate(channel, name, data)
                out[name] = (verdict.accepted, verdict.reasons[0].code if verdict.reasons else "")
            return out


def test_installing_the_example_plugin_changes_verdicts(installed_example, tmp_path):
    before = verdicts({"PYTHONPATH": str(ROOT)}, tmp_path)
    after = verdicts(installed_example, tmp_path)
    assert before == {
        "notes.md": (False, "extension_not_allowed"),
        "old.doc": (True, ""),
        "latin1.txt": (True, ""),
        "utf8.txt": (True, ""),
    }
    assert after == {
        "notes.md": (True, ""),
        "old.doc": (False, "extension_not_allowed"),
        "latin1.txt": (False, "text_not_utf8"),
        "utf8.txt": (True, ""),
    }


def test_a_plugin_installed_and_named_in_upload_plugins_loads_once(installed_example, tmp_path):
    # Its entry point's name (textfiles) is not its module's (upload_textfiles): pluggy's
    # "Plugin already registered under a different name" stopped the service.
    twice = {**installed_example, "UPLOAD_PLUGINS": "upload_textfiles"}
    assert verdicts(twice, tmp_path) == verdicts(installed_example, tmp_path)


def test_upload_plugins_disabled_keeps_an_installed_plugin_out(installed_example, tmp_path):
    disabled = {**installed_example, "UPLOAD_PLUGINS_DISABLED": "textfiles"}
    assert verdicts(disabled, tmp_path) == verdicts({"PYTHONPATH": str(ROOT)}, tmp_path)


def test_upload_plugins_disabled_holds_for_an_installed_plugin_named_in_upload_plugins_too(installed_example,
                                                                                            tmp_path):
    # Disabled by its entry point's name (textfiles), named by its module's (upload_textfiles).
    both = {**installed_example, "UPLOAD_PLUGINS_DISABLED": "textfiles", "UPLOAD_PLUGINS": "upload_textfiles"}
    assert verdicts(both, tmp_path) == verdicts({"PYTHONPATH": str(ROOT)}, tmp_path)


def test_upload_plugins_disabled_takes_built_in_rules_too(start_validator, caplog):
    with caplog.at_level(logging.INFO, logger="upload.plugins"):
        pm = validator_plugins(env={"UPLOAD_PLUGINS_DISABLED": "validator_service.rules.ooxml"})
    running = start_validator(pm=pm)
    rules = {d.rule for d in validate(running.channel, "a.txt", b"hello\n").decisions}
    assert "validator_service.rules.content" in rules and "validator_service.rules.ooxml" not in rules
    assert any("disabled" in r.getMessage() and "validator_service.rules.ooxml" in r.getMessage()
               for r in caplog.records)


def test_each_service_logs_the_plugins_it_loaded_with_their_hooks(caplog):
    with caplog.at_level(logging.INFO, logger="upload.plugins"):
        validator_plugins(env={"UPLOAD_PLUGINS": "tests.plugin_modules.eicar"})
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plugins loaded: ")]
    assert "tests.plugin_modules.eicar (UPLOAD_PLUGINS or in-process: upload_check)" in line
    assert "validator_service.rules.size (built-in: upload_check)" in line


def test_installed_example_plugin_renders_text_thumbnails(installed_example):
    port = free_port()
    with service_process("thumbnail_service", "THUMBNAIL_ADDR", port, installed_example):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = render(channel, b"line one\nline two\n", "text/plain")
    assert (reply.width, reply.height) == (200, 200)
    assert reply.mime_type == "image/jpeg"


def test_get_policy_lists_the_plugins_loaded(make_app, start_validator):
    plugged = start_validator(pm=validator_plugins(env={"UPLOAD_PLUGINS": "tests.plugin_modules.eicar"}))
    app = make_app(VALIDATOR_ADDR=plugged.address, UPLOAD_PLUGINS="tests.plugin_modules.eicar")
    client = app.test_client()
    assert client.get("/policy").get_json()["plugins"]["thumbnail"] == []  # not read yet: no call made for it
    app.extensions["services"].renderable()  # as an upload of an image reads them
    plugins = client.get("/policy").get_json()["plugins"]
    validator = {p["name"]: p for p in plugins["validator"]}
    assert validator["tests.plugin_modules.eicar"] == {
        "name": "tests.plugin_modules.eicar", "from": "UPLOAD_PLUGINS or in-process", "hooks": ["upload_check"]}
    assert validator["validator_service.rules.size"]["from"] == "built-in"
    assert [p["name"] for p in plugins["gateway"]] == ["tests.plugin_modules.eicar"]
    thumbnail = {p["name"]: p for p in plugins["thumbnail"]}
    assert "upload_thumbnail_renderers" in thumbnail["thumbnail_service.renderers"]["hooks"]
    assert thumbnail["thumbnail_service.metadata"]["from"] == "built-in"


def test_with_accounts_only_admins_see_the_plugins_in_the_policy(make_app):
    # Distributions and versions (and webhook hosts) are for operators, not for an open endpoint.
    from tests.accounts import ADMIN, TOKEN_SETTINGS

    client = make_app(**TOKEN_SETTINGS).test_client()
    anonymous = client.get("/policy").get_json()
    assert "plugins" not in anonymous and anonymous["allowed"]
    assert "validator_service.rules.size" in {p["name"] for p in
                                              client.get("/policy", headers=ADMIN).get_json()["plugins"]["validator"]}


def test_python_m_gateway_logs_the_plugins_it_loaded(tmp_path):
    # Under gunicorn nothing showed the gateway's own INFO lines: no "plugins loaded" at all.
    import os
    import time
    import urllib.request

    port = free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "DATA_DIR": str(tmp_path / "data"),
           "UPLOAD_PLUGINS": "tests.plugin_modules.eicar", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "gateway.log"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "plugins loaded: tests.plugin_modules.eicar (UPLOAD_PLUGINS or in-process: upload_check)" in log.read_text()
