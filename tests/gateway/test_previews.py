"""PDFs, HEIC/HEIF/AVIF images and videos get a thumbnail_url through the whole
gateway, as images do (contract, "Post-processing"); a damaged one is stored
without one. Renderers found late still work: the gateway reads the thumbnail
service's renderers again (a service restarted with a new one is used without
restarting the gateway), and `flask --app gateway thumbnails backfill` makes the
previews of files stored before their renderer existed."""
from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from gateway.ingest import services as services_module
from tests.conftest import Running, free_port
from tests.gateway.test_degrading import upload, wait_for
from tests.samples import make_sample
from protos.plugins import create_plugin_manager
from thumbnail_service import server as thumbnail_server
from thumbnail_service.renderers import DEFAULT_PLUGINS

# Metadata on SQLite and PostgreSQL alike: every test here that makes an app runs on both.
ON_BOTH_BACKENDS = True

SAMPLES = {  # extension: (detected type, thumbnail size)
    "pdf": ("application/pdf", (142, 200)),
    "heic": ("image/heic", (64, 48)),
    "heif": ("image/heif", (64, 48)),
    "avif": ("image/avif", (64, 48)),
    "mp4": ("video/mp4", (64, 48)),
    "webm": ("video/webm", (64, 48)),
    "mov": ("video/quicktime", (64, 48)),
}


def thumbnail_of(client, record) -> Image.Image:
    response = client.get(record["thumbnail_url"])
    assert response.status_code == 200
    im = Image.open(io.BytesIO(response.data))
    assert Image.MIME[im.format] == response.mimetype
    return im


@pytest.mark.parametrize("ext", SAMPLES)
def test_every_new_type_gets_a_thumbnail(client, tmp_path, ext):
    mime, size = SAMPLES[ext]
    response = upload(client, f"sample.{ext}", make_sample(ext, tmp_path).read_bytes())
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    assert record["type"] == mime
    assert record["is_image"] is (mime.startswith("image/"))
    assert record["thumbnail_url"], record
    assert thumbnail_of(client, record).size == size
    # The list shows it too.
    listed = client.get("/files").get_json()["files"][0]
    assert listed["thumbnail_url"] == record["thumbnail_url"]


def test_a_video_thumbnail_is_its_poster_frame(client, tmp_path):
    record = upload(client, "clip.mp4", make_sample("mp4", tmp_path).read_bytes()).get_json()
    r, g, b = thumbnail_of(client, record).convert("RGB").getpixel((32, 24))
    assert b > 200 and r < 60  # the sample is blue from its first second on


@pytest.mark.parametrize("name,data", [
    ("broken.pdf", b"%PDF-1.4\n" + b"1 0 obj << /Type /Catalog >> endobj\n" * 20),
    ("cut.mp4", None),
])
def test_a_damaged_pdf_or_video_is_stored_without_a_thumbnail(app, client, tmp_path, name, data):
    if data is None:
        whole = make_sample("mp4", tmp_path).read_bytes()
        data = whole[:len(whole) // 2]
    response = upload(client, name, data)
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    assert record["thumbnail_url"] is None
    row = app.extensions["files"].get(record["id"])
    assert row.thumbnail_status == "failed"  # permanent: never retried
    assert app.extensions["files"].count_pending_thumbnails() == 0
    assert client.get(record["download_url"]).data == data


def start_thumbnail_service(port: int, *plugins: str, built_in=DEFAULT_PLUGINS) -> Running:
    env = {"UPLOAD_PLUGINS": ",".join(plugins)} if plugins else {}
    pm = create_plugin_manager(built_in, env=env)
    return Running(*thumbnail_server.create_server(f"127.0.0.1:{port}", pm=pm))


@pytest.fixture
def restartable(make_app):
    """A thumbnail service on a port of its own, a gateway app wired to it, and a way to
    restart the service with other plugins; stopped at teardown."""
    port = free_port()
    running = [start_thumbnail_service(port)]
    app = make_app(THUMBNAIL_ADDR=f"127.0.0.1:{port}", THUMBNAIL_RETRY_INTERVAL=60)

    def restart(*plugins: str, built_in=DEFAULT_PLUGINS) -> None:
        running[0].close()
        running.append(start_thumbnail_service(port, *plugins, built_in=built_in))
        running.pop(0)
        wait_for(lambda: app.extensions["services"].health()["thumbnail"] == "SERVING")

    yield app, restart
    running[0].close()


def cli(app, *args: str):
    result = app.test_cli_runner().invoke(args=list(args))
    return result


def test_a_renderer_added_by_a_restart_is_used_without_restarting_the_gateway(restartable, monkeypatch):
    app, restart = restartable
    monkeypatch.setattr(services_module, "RENDERERS_RECHECK", 0.2)
    client = app.test_client()
    before = upload(client, "before.txt", b"written before text previews existed\n").get_json()
    assert before["thumbnail_url"] is None
    assert app.extensions["files"].get(before["id"]).thumbnail_status == "none"

    restart("tests.plugin_modules.text_cards")
    time.sleep(0.3)  # past RENDERERS_RECHECK: a type not on the list has the list read again
    after = upload(client, "after.txt", b"written after\n").get_json()
    assert after["thumbnail_url"], after
    assert thumbnail_of(client, after).size == (120, 80)

    # The file stored before still has none, until the backfill.
    assert client.get(f"/files/{before['id']}").get_json()["thumbnail_url"] is None
    dry = cli(app, "thumbnails", "backfill", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "1 would be rendered" in dry.output
    assert client.get(f"/files/{before['id']}").get_json()["thumbnail_url"] is None

    result = cli(app, "thumbnails", "backfill", "--verbose")
    assert result.exit_code == 0, result.output
    assert "1 made" in result.output and before["id"] in result.output
    filled = client.get(f"/files/{before['id']}").get_json()
    assert filled["thumbnail_url"] and thumbnail_of(client, filled).size == (120, 80)
    # Idempotent: nothing left to do, and the thumbnails made stay as they are.
    again = cli(app, "thumbnails", "backfill")
    assert again.exit_code == 0 and "No stored file lacks" in again.output
    assert client.get(f"/files/{before['id']}").get_json()["thumbnail_url"] == filled["thumbnail_url"]


def test_the_renderer_list_is_read_again_when_it_is_old(restartable, monkeypatch):
    app, restart = restartable
    services = app.extensions["services"]
    assert "text/plain" not in services.renderable()
    restart("tests.plugin_modules.text_cards")
    # Within its TTL (30 s) and RENDERERS_RECHECK (5 s) the list is kept...
    assert "text/plain" not in services.renderable()
    # ...and read again once it is THUMBNAIL_RENDERERS_TTL old.
    app.config["THUMBNAIL_RENDERERS_TTL"] = 0.0
    monkeypatch.setattr(services_module, "RENDERERS_RECHECK", 0.0)
    assert "text/plain" in services.renderable()


def test_an_image_whose_renderer_is_gone_waits_for_the_backfill(restartable, tmp_path, monkeypatch):
    # A thumbnail service restarted with PDFs alone (an older version without HEIF, say): a
    # HEIC stored meanwhile has no thumbnail, "none" (nothing failed), and gets one later.
    app, restart = restartable
    monkeypatch.setattr(services_module, "RENDERERS_RECHECK", 0.0)
    client = app.test_client()
    restart(built_in=("thumbnail_service.pdf",))
    record = upload(client, "photo.heic", make_sample("heic", tmp_path).read_bytes()).get_json()
    assert record["thumbnail_url"] is None
    assert app.extensions["files"].get(record["id"]).thumbnail_status == "none"
    # Nothing to backfill while no renderer takes it.
    assert "No stored file lacks" in cli(app, "thumbnails", "backfill").output
    restart()
    result = cli(app, "thumbnails", "backfill")
    assert result.exit_code == 0 and "1 made" in result.output, result.output
    assert thumbnail_of(client, client.get(f"/files/{record['id']}").get_json()).size == (64, 48)


def test_the_backfill_leaves_a_file_deleted_or_filled_meanwhile_alone(restartable, monkeypatch):
    app, restart = restartable
    client = app.test_client()
    doomed = upload(client, "doomed.txt", b"to be deleted\n").get_json()
    kept = upload(client, "kept.txt", b"to be kept\n").get_json()
    restart("tests.plugin_modules.text_cards")
    thumbnails = app.extensions["thumbnails"]
    repo = app.extensions["files"]
    real_make = thumbnails._make

    def make_then_race(row):
        error = real_make(row)
        if row.id == doomed["id"]:  # deleted while its thumbnail was being made
            assert client.delete(f"/files/{doomed['id']}").status_code == 204
        else:  # another backfill finished first
            repo.set_thumbnail(row.id, row.thumbnail, "done")
        return error

    monkeypatch.setattr(thumbnails, "_make", make_then_race)
    result = cli(app, "thumbnails", "backfill")
    assert result.exit_code == 0, result.output
    assert "2 changed meanwhile" in result.output
    assert client.get(f"/files/{doomed['id']}").status_code == 404
    storage = app.extensions["storage"]
    assert not storage.exists("thumbnails", f"{doomed['id']}.jpg")  # not left behind
    filled = client.get(f"/files/{kept['id']}").get_json()
    assert filled["thumbnail_url"] and client.get(filled["thumbnail_url"]).status_code == 200


def test_the_backfill_stops_when_the_service_is_down(make_app, tmp_path):
    app = make_app(THUMBNAIL_ADDR=f"127.0.0.1:{free_port()}", THUMBNAIL_TIMEOUT=0.5)
    result = cli(app, "thumbnails", "backfill")
    assert result.exit_code != 0
    assert "cannot be read" in result.output
