"""Images that cost too much to render, and thumbnails that keep failing, cost the
gateway a bounded wait: a request waits for thumbnails once in all, an image over
the render budget is a permanent "no thumbnail", readiness does not follow one
slow render, and a few files that keep failing cannot starve the other retries."""
from __future__ import annotations

import io
import threading
import time

from PIL import Image

from tests.gateway.test_degrading import upload
from tests.images import encode, progressive_scan_bomb
from tests.plugin_modules.thumbnail_faults import SlowJpegs, TimeoutJpegs
from thumbnail_service import server as thumbnail_server
from thumbnail_service.config import Settings

JPEG = encode(Image.new("RGB", (640, 480), "navy"), "JPEG")
PNG = encode(Image.new("RGB", (64, 48), "olive"), "PNG")


def plugins(*extra):
    return thumbnail_server.create_plugins(env={}, extra_plugins=list(extra))


def upload_many(client, files: list[tuple[bytes, str]]):
    data = {"file": [(io.BytesIO(content), name) for content, name in files]}
    return client.post("/upload", data=data, content_type="multipart/form-data")


def test_an_image_over_the_render_budget_gets_no_thumbnail_and_no_retry(make_app, validator, start_thumbnailer):
    thumbnailer = start_thumbnailer(settings=Settings(render_cpu=1))
    app = make_app(VALIDATOR_ADDR=validator.address, THUMBNAIL_ADDR=thumbnailer.address, THUMBNAIL_TIMEOUT=4.0)
    client = app.test_client()
    response = upload(client, "scans.jpg", progressive_scan_bomb(scans=3000))
    assert response.status_code == 201
    assert response.get_json()["thumbnail_url"] is None
    # Permanent: the file costs too much whenever it is tried, so it is not queued again.
    assert app.extensions["files"].count_pending_thumbnails() == 0
    assert app.extensions["files"].get(response.get_json()["id"]).thumbnail_status == "failed"


def test_a_request_waits_for_thumbnails_once_however_many_images_it_carries(
        make_app, validator, start_thumbnailer, tmp_path):
    renders = tmp_path / "renders"
    renders.mkdir()
    thumbnailer = start_thumbnailer(pm=plugins(SlowJpegs(renders)), settings=Settings(workers=4))
    app = make_app(VALIDATOR_ADDR=validator.address, THUMBNAIL_ADDR=thumbnailer.address,
                   THUMBNAIL_TIMEOUT=0.5, THUMBNAIL_RETRY_INTERVAL=60)
    started = time.monotonic()
    response = upload_many(app.test_client(), [(JPEG, f"photo-{i}.jpg") for i in range(4)])
    elapsed = time.monotonic() - started
    assert response.status_code == 201
    assert all(record["thumbnail_url"] is None for record in response.get_json()["files"])
    assert app.extensions["files"].count_pending_thumbnails() == 4
    # One render was asked for; the other three were left to the retry pass at once.
    # (Before, each image waited THUMBNAIL_TIMEOUT of its own: four renders, 2 s.)
    assert len(list(renders.iterdir())) == 1
    assert elapsed < 1.8, elapsed  # generous on purpose: one 0.5 s wait, not four


def test_readiness_does_not_follow_a_slow_render(make_app, validator, start_thumbnailer):
    thumbnailer = start_thumbnailer(settings=Settings(workers=1, render_cpu=3))
    app = make_app(VALIDATOR_ADDR=validator.address, THUMBNAIL_ADDR=thumbnailer.address, THUMBNAIL_TIMEOUT=5.0)
    client = app.test_client()
    uploading = threading.Thread(target=upload, args=(app.test_client(), "scans.jpg", progressive_scan_bomb()))
    uploading.start()
    try:
        time.sleep(0.8)  # the bomb holds the only render now (it burns 3 s of CPU)
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.get_json()
        assert ready.get_json()["services"]["thumbnail"] == "SERVING"
    finally:
        uploading.join(30)


def test_files_that_keep_failing_do_not_starve_the_other_retries(make_app, validator, start_thumbnailer):
    thumbnailer = start_thumbnailer(pm=plugins(TimeoutJpegs()))
    app = make_app(VALIDATOR_ADDR=validator.address, THUMBNAIL_ADDR=thumbnailer.address,
                   THUMBNAIL_RETRY_INTERVAL=3600)
    thumbnails, repo = app.extensions["thumbnails"], app.extensions["files"]
    thumbnails.stop()  # the passes are driven by hand here
    client = app.test_client()
    # 21 JPEGs whose render always times out: more than one pass looks at.
    assert upload_many(client, [(JPEG, f"slow-{i}.jpg") for i in range(21)]).status_code == 201
    png = upload(client, "quick.png", PNG).get_json()
    # The PNG's first try failed for a passing reason too (as if the service had hiccupped).
    repo.set_thumbnail(png["id"], None, "pending")
    assert repo.count_pending_thumbnails() == 22

    thumbnails.retry_pending()  # the 20 oldest: all time out, and wait before their next try
    assert repo.get(png["id"]).thumbnail_status == "pending"
    thumbnails.retry_pending()  # so the next pass reaches the others
    assert repo.get(png["id"]).thumbnail_status == "done"


def test_a_thumbnail_that_keeps_failing_is_given_up(make_app, validator, start_thumbnailer):
    thumbnailer = start_thumbnailer(pm=plugins(TimeoutJpegs()))
    app = make_app(VALIDATOR_ADDR=validator.address, THUMBNAIL_ADDR=thumbnailer.address,
                   THUMBNAIL_RETRY_INTERVAL=0.001)  # no pause between tries
    thumbnails, repo = app.extensions["thumbnails"], app.extensions["files"]
    thumbnails.stop()
    record = upload(app.test_client(), "slow.jpg", JPEG).get_json()
    for _ in range(4):
        thumbnails.retry_pending()
        time.sleep(0.02)
        assert repo.get(record["id"]).thumbnail_status == "pending"
    thumbnails.retry_pending()  # the fifth failure in a row
    assert repo.get(record["id"]).thumbnail_status == "failed"
    assert repo.count_pending_thumbnails() == 0
