"""A burst of images on a thumbnail service with few render slots: each upload waits
for a slot to free (a render of its gateway's ending, or a short poll), within
THUMBNAIL_TIMEOUT, and gets its thumbnail in its 201. Before, a refusal as BUSY
was tried again after 50 and then 200 ms, and most of a burst was left to the
background retry with no thumbnail in its answer.

Real thumbnail service (one render slot), real validator, real gateway app.
"""
from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from protos.testing import Running
from thumbnail_service import server as thumbnail_server
from thumbnail_service.config import Settings

BURST = 8


@pytest.fixture
def one_slot():
    running = Running(*thumbnail_server.create_server("127.0.0.1:0", settings=Settings(workers=1)))
    yield running
    running.close()


def photo(i: int) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((640, 480), 30 + i).convert("RGB").save(out, "JPEG", quality=85)
    return out.getvalue()


def test_a_burst_of_images_waits_for_the_one_render_slot_and_every_answer_has_its_thumbnail(make_app, one_slot):
    app = make_app(THUMBNAIL_ADDR=one_slot.address, THUMBNAIL_TIMEOUT=20)
    pictures = [photo(i) for i in range(BURST)]

    def upload(i: int):
        client = app.test_client()
        return client.post("/upload", data={"file": (io.BytesIO(pictures[i]), f"p{i}.jpg")},
                           content_type="multipart/form-data")

    with ThreadPoolExecutor(BURST) as pool:
        responses = list(pool.map(upload, range(BURST)))
    assert [r.status_code for r in responses] == [201] * BURST
    records = [r.get_json() for r in responses]  # one file each: the record itself
    assert all(record["thumbnail_url"] for record in records), [record["thumbnail_url"] for record in records]
    client = app.test_client()
    for record in records:
        thumbnail = client.get(record["thumbnail_url"])
        assert thumbnail.status_code == 200
        assert max(Image.open(io.BytesIO(thumbnail.data)).size) == 200
