"""GET /uploads/<name> with any Range (and If-Range) header: 200 with the
whole file, 206 with exactly the bytes its Content-Range names, or 416;
never a 5xx."""
from __future__ import annotations

import io
import re

import pytest
from hypothesis import event, given, strategies as st

from tests.fuzz import bounded
from tests.fuzz.strategies import header_text


# 1140 bytes of numbered lines: a byte from the wrong place shows.
DATA = "".join(f"{i:05d} line of text\n" for i in range(60)).encode()
SIZE = len(DATA)


@pytest.fixture
def stored(client):
    """DATA stored as a .txt file: its download address, bytes and ETag."""
    response = client.post("/upload", data={"file": (io.BytesIO(DATA), "r.txt")},
                           content_type="multipart/form-data")
    assert response.status_code == 201, response.get_json()
    record = response.get_json()
    return record["download_url"], DATA, f'"{record["sha256"]}"'


POSITION = st.one_of(st.integers(0, SIZE + 10), st.integers(0, 2**70), st.sampled_from([-1, 0, 1, SIZE - 1, SIZE]))


def _spec(first, last):
    return f"{'' if first is None else first}-{'' if last is None else last}"


RANGE_SPECS = st.lists(st.tuples(st.one_of(st.none(), POSITION), st.one_of(st.none(), POSITION)).map(
    lambda t: _spec(*t)), min_size=0, max_size=4)
# One satisfiable range and the (first, last) bytes it names (RFC 9110, section 14.1.2).
SATISFIABLE_WITH_BYTES = st.one_of(
    st.builds(lambda first, length: (f"bytes={first}-{first + length}", first, min(first + length, SIZE - 1)),
              st.integers(0, SIZE - 1), st.integers(0, SIZE)),
    st.builds(lambda first: (f"bytes={first}-", first, SIZE - 1), st.integers(0, SIZE - 1)),
    # Not longer than the file: werkzeug answers a longer suffix with 416, where RFC 9110
    # says to send the whole file (RANGES still sends them: 416 is allowed there).
    st.builds(lambda suffix: (f"bytes=-{suffix}", SIZE - suffix, SIZE - 1), st.integers(1, SIZE)),
)
SATISFIABLE = SATISFIABLE_WITH_BYTES.map(lambda t: t[0])
RANGES = st.one_of(
    SATISFIABLE, SATISFIABLE,  # twice: a satisfiable range is what most clients send
    st.integers(SIZE + 1, 2**64).map(lambda suffix: f"bytes=-{suffix}"),
    # Several ranges, some of which may be fine.
    st.lists(SATISFIABLE.map(lambda r: r[len("bytes="):]), min_size=2, max_size=3).map(lambda r: "bytes=" + ",".join(r)),
    # Well formed and almost: one or more ranges, suffix ranges, open ends, odd units and spacing.
    st.tuples(st.sampled_from(["bytes=", "bytes =", "Bytes=", "bytes= ", "items=", "bytes", ""]), RANGE_SPECS,
              st.sampled_from([",", ", ", " ,", ",,"])).map(lambda t: t[0] + t[2].join(t[1])),
    header_text(40, "bytes=", "0", "1", "-", ",", str(SIZE - 1), str(SIZE), "9" * 25),
)


@bounded(60)
@given(RANGES, st.one_of(st.none(), st.sampled_from(["etag", "wrong", "date", "garbage"])))
def test_any_range_gives_200_206_or_416(client, stored, range_header, if_range):
    url, data, etag = stored
    headers = {"Range": range_header}
    if if_range is not None:
        headers["If-Range"] = {"etag": etag, "wrong": '"nope"', "date": "Thu, 01 Jan 2099 00:00:00 GMT",
                               "garbage": "\xffnot a date"}[if_range]
    response = client.get(url, headers=headers)
    body = response.get_data()
    event(str(response.status_code))
    assert response.status_code in (200, 206, 416), (response.status_code, body[:300])
    if response.status_code == 200:
        assert body == data
    elif response.status_code == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers["Content-Range"])
        assert match, response.headers["Content-Range"]
        first, last, total = map(int, match.groups())
        assert total == len(data) and first <= last < total
        assert body == data[first:last + 1]
        assert int(response.headers["Content-Length"]) == len(body)
    else:
        assert response.headers.get("Content-Range") == f"bytes */{len(data)}"
        assert response.mimetype == "application/json" and response.get_json()["error"]


@bounded(40)
@given(SATISFIABLE_WITH_BYTES, st.sampled_from(["GET", "HEAD"]))
def test_a_satisfiable_range_gives_exactly_its_bytes(client, stored, range_and_bytes, method):
    url, data, _ = stored
    range_header, first, last = range_and_bytes
    response = client.open(url, method=method, headers={"Range": range_header})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    assert int(response.headers["Content-Length"]) == last - first + 1
    assert response.get_data() == (data[first:last + 1] if method == "GET" else b"")
