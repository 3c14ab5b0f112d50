"""The rules in force, assembled once at start-up from the registration hooks."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pluggy

from protos.plugins import loaded_plugins
from protos.upload.v1 import common_pb2, validator_pb2
from validator_service.config import Settings
from validator_service.types import FileType, WholeFileRule


@dataclass(frozen=True)
class Policy:
    types: dict[str, FileType] = field(default_factory=dict)
    max_file_size: int = Settings.max_file_size
    max_image_dimension: int = Settings.max_image_dimension
    head_bytes: int = Settings.max_head
    # Rules that read every byte (upload_whole_file_rules), in pluggy's call order.
    whole_file_rules: tuple[WholeFileRule, ...] = ()
    # The plugins loaded (protos.plugins.loaded_plugins), for GetPolicy.
    plugins: tuple[dict, ...] = ()

    def type_for(self, extension: str) -> FileType | None:
        return self.types.get(extension)

    def to_proto(self) -> validator_pb2.Policy:
        return validator_pb2.Policy(
            allowed=[
                validator_pb2.AllowedType(extension=t.extension, mime_types=list(t.mime_types))
                for t in sorted(self.types.values(), key=lambda t: t.extension)
            ],
            max_file_size=self.max_file_size,
            max_image_dimension=self.max_image_dimension,
            head_bytes=self.head_bytes,
            whole_file=bool(self.whole_file_rules),
            plugins=[common_pb2.PluginInfo(name=p["name"], source=p["from"], hooks=p["hooks"])
                     for p in self.plugins],
        )


def _flatten(results) -> list:
    # Registration hooks may return a list or be generators; pluggy collects
    # each plugin's return value in a list (later-registered plugins first).
    items = []
    for result in results:
        items.extend(result or ())
    return items


def build_policy(pm: pluggy.PluginManager, settings: Settings, built_in: Iterable[str] = ()) -> Policy:
    """The policy the plugins and settings make; ``built_in``: the names of the built-in rules."""
    types: dict[str, FileType] = {}
    # pluggy returns later registrations first; apply in registration order so
    # a plugin's entry replaces the built-in one.
    for result in reversed(pm.hook.upload_file_types()):
        for file_type in result or ():
            ext = file_type.extension.lower().lstrip(".")
            types[ext] = replace(file_type, extension=ext)
    for ext in _flatten(pm.hook.upload_removed_file_types()):
        types.pop(ext.lower().lstrip("."), None)
    return Policy(
        types=types,
        max_file_size=settings.max_file_size,
        max_image_dimension=settings.max_image_dimension,
        head_bytes=settings.max_head,
        whole_file_rules=whole_file_rules(pm),
        plugins=tuple(loaded_plugins(pm, set(built_in))),
    )


def whole_file_rules(pm: pluggy.PluginManager) -> tuple[WholeFileRule, ...]:
    """Every registered whole-file rule, in pluggy's call order (as upload_check's
    rules run); a plugin that yields anything else stops the service at start-up
    with a sentence."""
    rules = []
    for impl in reversed(pm.hook.upload_whole_file_rules.get_hookimpls()):
        for rule in impl.function() or ():
            if not isinstance(rule, WholeFileRule) or not callable(rule.open):
                raise TypeError(f"upload_whole_file_rules of {impl.plugin_name} gave {rule!r}: "
                                "yield WholeFileRule(name, open), open(file) returning a scanner.")
            rules.append(rule)
    return tuple(rules)
