"""Settings of plugins: each from an environment variable ``UPLOAD_PLUGIN_<NAME>__<KEY>``, where
``<NAME>`` is the plugin's name as the services log it (its entry point's, or its module's, in
capitals, every run of other characters one underscore: ``my-rules`` -> ``MY_RULES``) and two
underscores end it (a name never holds two in a row, so the variable names its plugin alone). A
plugin declares them with the ``upload_plugin_settings`` hook; each service reads and checks them
once at start-up, and a value that does not parse, or a variable naming no setting of a loaded
plugin, stops the service with a sentence. The values reach the thumbnail service's render
children too (``values()``, ``install()``): a renderer or transform reads ``.value`` there."""
from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from protos.markers import hookspec

PREFIX = "UPLOAD_PLUGIN_"

# Values read at start-up, by (the module that declared the setting, its key): the same in a
# render child, where the module is imported afresh and its Setting objects are new ones.
_VALUES: dict[tuple[str, str], Any] = {}


@dataclass(frozen=True, eq=False)
class Setting:
    """One setting of a plugin: ``key`` (capitals, digits, _), its ``default``, ``parse``
    turning the variable's text into the value (raise ValueError for a bad one), and a
    ``help`` sentence. ``value`` is what the service read (the default when unset)."""

    key: str
    default: Any = None
    parse: Callable[[str], Any] = str
    help: str = ""
    # The module that declares it (found by itself): declare settings at a module's top level.
    module: str = ""

    def __post_init__(self):
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", self.key):
            raise ValueError(f"A plugin setting's key is capitals, digits and _: got {self.key!r}.")
        if not self.module:
            object.__setattr__(self, "module", sys._getframe(2).f_globals.get("__name__", ""))

    @property
    def value(self) -> Any:
        return _VALUES.get((self.module, self.key), self.default)


def values() -> dict[tuple[str, str], Any]:
    """The values read, to hand to another process (a render child)."""
    return dict(_VALUES)


def install(read: dict[tuple[str, str], Any]) -> None:
    """In another process: the values its parent read."""
    _VALUES.update(read)


@hookspec
def upload_plugin_settings() -> Iterable[Setting]:
    """Declare the plugin's settings. Registration hook: called once at start-up, in every
    service, after the plugins are loaded; each setting's ``value`` is then the environment's
    ``UPLOAD_PLUGIN_<NAME>__<KEY>``, parsed, or its default. Example::

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
    """The variables' prefix for a plugin: ``UPLOAD_PLUGIN_MY_RULES__``."""
    return PREFIX + re.sub(r"[^A-Z0-9]+", "_", plugin_name.upper()).strip("_") + "__"


class SettingError(RuntimeError):
    """A plugin's setting cannot be read (the service stops with the sentence)."""


def read_settings(pm, env: Mapping[str, str]) -> list[str]:
    """Read every plugin's declared settings from ``env`` (each back to its default first);
    return the variables read (for the log). Raises SettingError for a value that does not
    parse, a variable under a loaded plugin's prefix that names none of its settings, or two
    plugins with settings whose names give one prefix."""
    declared: dict[str, tuple[str, dict[str, Setting]]] = {}
    for impl in pm.hook.upload_plugin_settings.get_hookimpls():
        settings = {s.key: s for s in impl.function(**{a: None for a in impl.argnames}) or ()}
        prefix = env_name(impl.plugin_name)
        if prefix in declared:
            raise SettingError(f"The plugins {declared[prefix][0]!r} and {impl.plugin_name!r} would both read "
                               f"{prefix}*: rename one, or disable it (UPLOAD_PLUGINS_DISABLED).")
        declared[prefix] = (impl.plugin_name, settings)
        for setting in settings.values():
            _VALUES.pop((setting.module, setting.key), None)
    loaded = {env_name(name): name for name, plugin in pm.list_name_plugin() if plugin is not None}
    read = []
    for variable in sorted(k for k in env if k.startswith(PREFIX)):
        name, separator, key = variable[len(PREFIX):].partition("__")
        prefix = PREFIX + name + "__"
        if not separator or prefix not in loaded:
            continue  # a plugin not loaded here (disabled, or not installed), or not a setting's
        plugin, settings = declared.get(prefix, (loaded[prefix], {}))
        setting = settings.get(key)
        if setting is None:
            known = ", ".join(prefix + k for k in sorted(settings)) or "none"
            raise SettingError(f"{variable} names no setting of the plugin {plugin!r} (its settings: {known}).")
        try:
            _VALUES[(setting.module, setting.key)] = setting.parse(env[variable])
        except (ValueError, TypeError) as exc:
            raise SettingError(f"{variable} = {env[variable]!r} will not do for the plugin {plugin!r}: {exc}"
                               f"{f' ({setting.help})' if setting.help else ''}.") from None
        read.append(variable)
    return read
