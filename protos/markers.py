"""The pluggy project's markers, apart so that every hookspec module can import them without
protos.plugins (which imports the hookspecs to load them). Plugins import them from
protos.plugins."""
from __future__ import annotations

import pluggy

PROJECT = "upload_service"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
