"""Plugin settings (protos/plugin_settings.py): declared by a plugin, read from
UPLOAD_PLUGIN_<NAME>_<KEY> by each service at start-up, a bad value or an unknown key a sentence
that stops it."""
from __future__ import annotations

import io

import pytest

from protos.plugins import PluginLoadError
from tests.conftest import validate
from validator_service.server import create_plugins

NAMED = {"UPLOAD_PLUGINS": "tests.plugin_modules.word_rule"}
PREFIX = "UPLOAD_PLUGIN_TESTS_PLUGIN_MODULES_WORD_RULE__"


def test_defaults_hold_until_the_environment_says_otherwise(start_validator):
    running = start_validator(pm=create_plugins(env=NAMED))
    assert validate(running.channel, "a.txt", b"a forbidden word\n").reasons[0].code == "word"
    running = start_validator(pm=create_plugins(env={**NAMED, PREFIX + "WORD": "secret", PREFIX + "LIMIT": "2"}))
    assert validate(running.channel, "a.txt", b"a forbidden word\n").accepted
    assert validate(running.channel, "a.txt", b"the secret\n").reasons[0].code == "word"
    assert validate(running.channel, "a.txt", b"1\n2\n3\n").reasons[0].code == "too_many_lines"


def test_values_reach_the_render_children_of_the_thumbnail_service(upload_thumbnailer):
    # A renderer runs in a child of the fork server, a fresh interpreter that never read them.
    from tests.plugin_modules import sized_cards

    prefix = "UPLOAD_PLUGIN_TESTS_PLUGIN_MODULES_SIZED_CARDS__"
    thumbnail = upload_thumbnailer(sized_cards, env={prefix + "WIDTH": "50"}).render(b"text\n", "text/plain")
    assert thumbnail.width == 50


def test_a_new_plugin_manager_starts_from_the_defaults():
    from tests.plugin_modules import word_rule

    create_plugins(env={**NAMED, PREFIX + "WORD": "secret"})
    assert word_rule.WORD.value == "secret"
    create_plugins(env=NAMED)
    assert word_rule.WORD.value == "forbidden"


def test_two_plugins_whose_names_give_one_prefix_stop_the_service():
    from protos.plugin_settings import Setting
    from protos.plugins import hookimpl

    class Named:
        def __init__(self, name):
            self.__name__ = name

        @hookimpl
        def upload_plugin_settings(self):
            yield Setting("KEY")

    with pytest.raises(PluginLoadError, match="'my-rules' and 'my_rules' would both read UPLOAD_PLUGIN_MY_RULES__"):
        create_plugins(env={}, extra_plugins=[Named("my-rules"), Named("my_rules")])


def test_a_value_that_does_not_parse_stops_the_service_with_a_sentence():
    with pytest.raises(PluginLoadError, match=f"{PREFIX}LIMIT = 'lots' will not do.*most lines"):
        create_plugins(env={**NAMED, PREFIX + "LIMIT": "lots"})


def test_a_variable_naming_no_setting_stops_the_service_and_lists_the_settings():
    with pytest.raises(PluginLoadError, match=f"{PREFIX}WROD names no setting.*{PREFIX}LIMIT, {PREFIX}WORD"):
        create_plugins(env={**NAMED, PREFIX + "WROD": "typo"})


def test_a_variable_for_a_plugin_not_loaded_is_left_alone():
    create_plugins(env={"UPLOAD_PLUGIN_SOMETHING_ELSE__KEY": "1"})


def test_the_gateway_reads_them_too(make_app, start_validator, monkeypatch):
    # The gateway passes its plugins their settings from its own environment (config.from_env).
    from gateway import config

    monkeypatch.setenv(PREFIX + "LIMIT", "nope")
    monkeypatch.setenv("UPLOAD_PLUGINS", "tests.plugin_modules.word_rule")
    settings = config.from_env()
    with pytest.raises(SystemExit, match="will not do"):
        make_app(UPLOAD_PLUGINS=settings["UPLOAD_PLUGINS"], PLUGIN_SETTINGS=settings["PLUGIN_SETTINGS"])
    monkeypatch.setenv(PREFIX + "LIMIT", "5")
    settings = config.from_env()
    client = make_app(UPLOAD_PLUGINS=settings["UPLOAD_PLUGINS"], PLUGIN_SETTINGS=settings["PLUGIN_SETTINGS"]) \
        .test_client()
    stored = client.post("/upload", data={"file": (io.BytesIO(b"1\n" * 3), "a.txt")})
    assert stored.status_code == 201
    from tests.plugin_modules import word_rule

    assert word_rule.LIMIT.value == 5  # read by the gateway's plugin manager
