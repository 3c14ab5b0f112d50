"""The whole service, for a plugin's own tests (a pytest plugin installed with the project,
entry point ``pytest11``): ``upload_gateway(*plugins, env=None, **settings)`` starts a real
validator and thumbnail service with ``plugins`` (``upload_validator``,
``upload_thumbnailer``), a gateway app wired to them with the same plugins and its own data
folder, and returns that app's Flask test client. Its event hooks
(``upload_file_stored``...) are delivered as in a running gateway, on their own threads.

    def test_stored_files_are_indexed(upload_gateway):
        client = upload_gateway(my_plugin)
        client.post("/upload", data={"file": (io.BytesIO(b"hello\\n"), "a.txt")})
        ...  # what my_plugin.upload_file_stored did

``settings`` are the gateway's (``MAX_FILE_SIZE``, ``IMAGE_METADATA``...); ``env`` the
services'. Imports are made when the fixture is used.
"""
from __future__ import annotations

import pytest


@pytest.fixture
def upload_gateway(upload_validator, upload_thumbnailer, tmp_path):
    """A gateway test client wired to real services, all with the plugins given."""
    apps = []

    def start(*plugins, env: dict | None = None, **settings):
        from gateway import create_app
        from gateway.events import dispatch

        validator = upload_validator(*plugins, env=env)
        thumbnailer = upload_thumbnailer(*plugins, env=env)
        app = create_app({
            "TESTING": True,
            "DATA_DIR": str(tmp_path / f"upload-gateway-{len(apps)}"),
            "VALIDATOR_ADDR": validator.address,
            "THUMBNAIL_ADDR": thumbnailer.address,
            "EXTRA_PLUGINS": plugins,
            **settings,
        })
        apps.append(app)
        dispatch.start(app)
        return app.test_client()

    yield start
    for app in apps:
        for name in ("events", "thumbnails", "file_reaper", "tus_reaper", "reconcile_timer"):
            if name in app.extensions:
                app.extensions[name].stop()
        app.extensions["services"].close()
        app.extensions["files"].engine.dispose()
