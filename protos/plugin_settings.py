"""Settings of plugins: each from an environment variable ``UPLOAD_PLUGIN_<NAME>_<KEY>``, where
``<NAME>`` is the plugin's name as the services log it (its entry point's, or its module's, in
capitals, every run of other characters an underscore: ``my-rules`` -> ``MY_RULES``). A plugin
declares them with the ``upload_plugin_settings`` hook; each service reads and checks them once
at start-up, and a value that does not parse, or a variable naming no setting of its plugin,
stops the service with a sentence."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from protos.markers import hookspec

PREFIX = "UPLOAD_PLUGIN_"

# Values read at start-up, by setting (identity): Setting is frozen and hashable by value.
_VALUES: dict[int, Any] = {}


@dataclass(frozen=True, eq=False)
class Setting:
    """One setting of a plugin: ``key`` (capitals, digits, _), its ``default``, ``parse``
    turning the variable's text into the value (raise ValueError for a bad one), and a
    ``help`` sentence. ``value`` is what the service read (the default when unset)."""

    key: str
    default: Any = None
    parse: Callable[[str], Any] = str
    help: str = ""

    def __post_init__(self):
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", self.key):
            raise ValueError(f"A plugin setting's key is capitals, digits and _: got {self.key!r}.")

    @property
    def value(self) -> Any:
        return _VALUES.get(id(self), self.default)


@hookspec
def upload_plugin_settings() -> Iterable[Setting]:
    """Declare the plugin's settings. Registration hook: called once at start-up, in every
    service, after the plugins are loaded; each setting's ``value`` is then the environment's
    ``UPLOAD_PLUGIN_<NAME>_<KEY>``, parsed, or its default. Example::

        WORD = Setting("WORD", default="forbidden", help="the word refused")

        @hookimpl
        def upload_plugin_settings():
            yield WORD

        @hookimpl
        def upload_check(file):
            if WORD.value.encode() in file.head(4096):
                return Rejection("word", "This file holds a word not taken here.")
    """


def env_name(plugin_name: str) -> str:
    return PREFIX + re.sub(r"[^A-Z0-9]+", "_", plugin_name.upper()).strip("_") + "_"


class SettingError(RuntimeError):
    """A plugin's setting cannot be read (the service stops with the sentence)."""


def read_settings(pm, env: Mapping[str, str]) -> list[str]:
    """Read every plugin's declared settings from ``env``; return the variables read (for
    the log). Raises SettingError for a value that does not parse, or a variable under a
    loaded plugin's prefix that names none of its settings."""
    declared: dict[str, tuple[str, dict[str, Setting]]] = {}
    for impl in pm.hook.upload_plugin_settings.get_hookimpls():
        settings = {s.key: s for s in impl.function(**{a: None for a in impl.argnames}) or ()}
        declared[env_name(impl.plugin_name)] = (impl.plugin_name, settings)
    prefixes = {env_name(name): name for name, plugin in pm.list_name_plugin() if plugin is not None}
    read = []
    for variable in sorted(k for k in env if k.startswith(PREFIX)):
        prefix = max((p for p in prefixes if variable.startswith(p)), key=len, default=None)
        if prefix is None:
            continue  # a plugin not loaded here (disabled, or not installed): nothing to check
        plugin, settings = declared.get(prefix, (prefixes[prefix], {}))
        setting = settings.get(variable[len(prefix):])
        if setting is None:
            known = ", ".join(prefix + key for key in sorted(settings)) or "none"
            raise SettingError(f"{variable} names no setting of the plugin {plugin!r} (its settings: {known}).")
        try:
            _VALUES[id(setting)] = setting.parse(env[variable])
        except (ValueError, TypeError) as exc:
            raise SettingError(f"{variable} = {env[variable]!r} will not do for the plugin {plugin!r}: {exc}"
                               f"{f' ({setting.help})' if setting.help else ''}.") from None
        read.append(variable)
    return read
