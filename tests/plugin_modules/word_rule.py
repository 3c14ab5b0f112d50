"""A rule with settings (protos/plugin_settings.py): refuses files holding WORD, and files with
more than LIMIT lines. Loaded by name (UPLOAD_PLUGINS) in the tests."""
from protos.plugin_settings import Setting
from protos.plugins import hookimpl
from validator_service.hookspecs import Rejection

WORD = Setting("WORD", default="forbidden", help="a word files must not hold")
LIMIT = Setting("LIMIT", default=1000, parse=int, help="the most lines a file may have")


@hookimpl
def upload_plugin_settings():
    yield WORD
    yield LIMIT


@hookimpl
def upload_check(file):
    head = file.head(64 * 1024)
    if WORD.value.encode() in head:
        return Rejection("word", f"This file holds the word {WORD.value!r}.")
    if head.count(b"\n") > LIMIT.value:
        return Rejection("too_many_lines", f"This file has more than {LIMIT.value} lines.")
    return None
