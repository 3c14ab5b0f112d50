"""Plugin discovery shared by every service.

All three services share one pluggy project, ``upload_service``. A plugin
module may implement hooks of several services, so every plugin manager knows
every service's hookspecs (they are plain dependency-free modules: importing
one needs no other service's dependencies); each service only calls its own.
That keeps ``pm.check_pending()`` able to catch a misspelt hook name wherever
the plugin is loaded.

An image that ships one service only (deploy/*.Dockerfile copy one package
beside ``protos``) lacks the others' hookspecs: they are left out, and a hook
name that none of the present ones knows is then logged instead of refused,
since it may belong to a service that is not there.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
from collections.abc import Iterable, Mapping

import pluggy

from protos.markers import PROJECT, hookimpl, hookspec  # re-exported: what plugins import
from protos.plugin_settings import SettingError, read_settings

log = logging.getLogger("upload.plugins")

ENTRY_POINT_GROUP = "upload_service"
__all__ = ["PROJECT", "hookimpl", "hookspec", "PluginLoadError", "create_plugin_manager", "notify"]

SPEC_MODULES = (
    "protos.plugin_settings",
    "validator_service.hookspecs",
    "thumbnail_service.hookspecs",
    "gateway.hookspecs",
)


class PluginLoadError(RuntimeError):
    """A plugin named in the environment cannot be loaded; the service refuses to start."""


def _env_plugin_names(env: Mapping[str, str], key: str = "UPLOAD_PLUGINS") -> list[str]:
    return [n.strip() for n in env.get(key, "").split(",") if n.strip()]


def create_plugin_manager(
    default_plugins: Iterable[str],
    env: Mapping[str, str] | None = None,
    extra_plugins: Iterable[object] = (),
) -> pluggy.PluginManager:
    """Build a service's plugin manager.

    ``default_plugins`` lists the built-in plugins in the order they should be
    called; they are registered in reverse because pluggy calls the most
    recently registered plugin first. Order of registration: the built-in
    plugins, then installed
    packages (entry-point group ``upload_service``), then modules named in
    ``UPLOAD_PLUGINS`` (comma-separated), then ``extra_plugins`` (objects, for
    tests and embedding). pluggy calls later registrations first.
    """
    env = os.environ if env is None else env
    pm = pluggy.PluginManager(PROJECT)
    # UPLOAD_PLUGINS_DISABLED: names (an entry point's, a module's, a built-in's) never loaded.
    disabled = _env_plugin_names(env, "UPLOAD_PLUGINS_DISABLED")
    for name in disabled:
        pm.set_blocked(name)
    absent = []
    for spec in SPEC_MODULES:
        if importlib.util.find_spec(spec.partition(".")[0]) is None:
            absent.append(spec)  # that service is not installed here
            continue
        pm.add_hookspecs(importlib.import_module(spec))
    for name in reversed(tuple(default_plugins)):
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    # A module an installed plugin's entry point names is disabled with it, whichever name it is given.
    blocked_modules = {ep.value.partition(":")[0] for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                       if ep.name in disabled}
    for name in _env_plugin_names(env):
        if pm.has_plugin(name) or pm.is_blocked(name) or name in blocked_modules:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginLoadError(
                f"UPLOAD_PLUGINS names the module {name!r}, which cannot be imported: {exc}"
            ) from exc
        if pm.is_registered(module):
            continue  # installed too (its entry point's name differs): loaded once
        pm.register(module, name=name)
    for plugin in extra_plugins:
        if pm.is_registered(plugin):
            continue  # a module both installed and handed in (a plugin's own tests): loaded once
        # Named by class so verdicts can say which rule decided (pluggy would use id()).
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__module__}.{type(plugin).__qualname__}"
        pm.register(plugin, name=name)
    _refuse_wrappers(pm)
    _log_loaded(pm, set(default_plugins), disabled)
    try:
        read = read_settings(pm, env)
    except SettingError as exc:
        raise PluginLoadError(str(exc)) from None
    if read:
        log.info("plugin settings read: %s", ", ".join(read))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if not absent:
            raise PluginLoadError(f"A plugin implements a hook that does not exist: {exc}") from exc
        log.warning("%s; it may be a hook of a service not installed here (%s), so it is not refused",
                    exc, ", ".join(absent))
    return pm


def loaded_plugins(pm: pluggy.PluginManager, built_in: set[str] = frozenset()) -> list[dict]:
    """Each plugin loaded: its name, where it came from (``built-in``, the distribution and
    version that installed it, or ``UPLOAD_PLUGINS``) and the hooks it implements."""
    installed = {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
    found = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda pair: str(pair[0])):
        if plugin is None:
            continue  # blocked
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or ())
        source = "built-in" if name in built_in else installed.get(id(plugin), "UPLOAD_PLUGINS or in-process")
        found.append({"name": name, "from": source, "hooks": hooks})
    return found


def _log_loaded(pm: pluggy.PluginManager, built_in: set[str], disabled: list[str]) -> None:
    plugins = loaded_plugins(pm, built_in)
    log.info("plugins loaded: %s", "; ".join(f"{p['name']} ({p['from']}: {', '.join(p['hooks']) or 'no hooks'})"
                                             for p in plugins) or "none")
    if disabled:
        log.info("plugins disabled (UPLOAD_PLUGINS_DISABLED): %s", ", ".join(disabled))


def _refuse_wrappers(pm: pluggy.PluginManager) -> None:
    """The services call their rules, renderers and events one implementation at a time (so
    that a verdict can say which rule decided, and one failing plugin cannot fail another):
    a wrapper (``hookwrapper=True`` or ``wrapper=True``) would be accepted and never called."""
    for name in dir(pm.hook):
        if not name.startswith("upload_"):
            continue
        for impl in getattr(pm.hook, name).get_hookimpls():
            if impl.hookwrapper or getattr(impl, "wrapper", False):
                raise PluginLoadError(
                    f"The plugin {impl.plugin_name!r} implements {name} as a wrapper, which this project's hooks "
                    "do not support (they are called one implementation at a time): make it a plain "
                    "implementation.")


def notify(hook, log, **kwargs) -> None:
    """Call a notification hook so that no implementation can fail the caller:
    each one runs on its own and an exception is logged, not raised."""
    for impl in reversed(hook.get_hookimpls()):
        try:
            impl.function(**{name: kwargs[name] for name in impl.argnames})
        except Exception:
            log.exception("plugin %s failed in %s; ignored", impl.plugin_name, hook.name)
