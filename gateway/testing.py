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

``settings`` are the gateway's (``MAX_FILE_SIZE``, ``IMAGE_METADATA``...), over those ``env``
gives all three (none of the test process's environment: not its DATABASE_URL, not its bucket).
Imports are made when the fixture is used.
"""
from __future__ import annotations

import pytest


@pytest.fixture
def upload_gateway(upload_validator, upload_thumbnailer, tmp_path):
    """A gateway test client wired to real services, all with the plugins given."""
    apps = []

    def start(*plugins, env: dict | None = None, **settings):
        from gateway import config, create_app
        from gateway.events import dispatch

        validator = upload_validator(*plugins, env=env)
        thumbnailer = upload_thumbnailer(*plugins, env=env)
        data_dir = tmp_path / f"upload-gateway-{len(apps)}"
        # Every setting from ``env`` (none of the test process's: not its DATABASE_URL, not its
        # bucket), then the fixture's own: a data folder (and so, unless ``env`` names another
        # database, a SQLite database) of its own.
        app = create_app({
            **config.from_env(dict(env or {})),
            "TESTING": True,
            "DATA_DIR": str(data_dir),
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
