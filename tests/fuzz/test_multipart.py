"""POST /upload with odd multipart bodies: random boundaries, part headers,
preambles and epilogues, truncated bodies, duplicate fields, odd
Content-Disposition parameters. Never a 5xx, every error JSON, and a
refused request leaves nothing behind: no bytes in the data folder, no record."""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

from hypothesis import event, example, given, strategies as st

from tests.fuzz import bounded
from tests.fuzz.strategies import HEADER_CHAR

# Taken for text/plain by the validator: a .txt part holding it is stored.
TEXT = b"The quick brown fox jumps over the lazy dog.\nA second line of plain text.\n"
# The database (and its key) change with every request; everything else in DATA_DIR is bytes of uploads.
NOT_UPLOADS = re.compile(r"(\.(db|sqlite|sqlite3)(-wal|-shm|-journal)?|secret_key)$")

BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
ODD_BOUNDARY = st.one_of(
    st.text(st.sampled_from(BCHARS), min_size=1, max_size=70),
    st.sampled_from(["x", "--", "a b", "=", "\u00e9t\u00e9", "b" * 200, "a;b", 'a"b', " ", "-"]),
    st.text(HEADER_CHAR, min_size=1, max_size=30),
)
NAMES = st.sampled_from(["notes.txt", "NOTES.TXT", "../../etc/notes.txt", "C:\\x\\a.txt", "caf\u00e9.txt",
                         "\u202etxt.exe", "a\x00b.txt", "a;b.txt", 'q"uote.txt', "x" * 300 + ".txt", "a b.txt"])
ODD_NAMES = st.one_of(
    st.sampled_from(["tool.exe", "noext", "", " ", ".txt", "photo.png", "a.tar.gz", "\u0301.txt", "..", "/"]),
    st.text(st.characters(codec="utf-8"), max_size=20),
)


def usually(draw, usual, unusual, odds: int = 4):
    """``usual`` (a value or strategy) ``odds`` times out of ``odds + 1``, else ``unusual``:
    each example breaks only a few things, so most get far enough to test the next."""
    # Shrinks towards the usual (0), so a failing example is reported as nearly valid as it can be.
    choice = unusual if draw(st.integers(0, odds)) == odds else usual
    return draw(choice) if isinstance(choice, st.SearchStrategy) else choice


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def disposition(draw, field: str, filename: str | None) -> str:
    """A Content-Disposition the way some client or other writes it."""
    form = usually(draw, "form-data", st.sampled_from(["FORM-DATA", "attachment", "inline", ""]), odds=6)
    params = [usually(draw, f'name="{field}"', st.sampled_from(
        [f"name={field}", f'NAME="{field}"', f"name*=UTF-8''{quote(field)}", f'name="{field}"; name="other"']), odds=6)]
    if filename is not None:
        params.append(usually(draw, f"filename={quoted(filename)}", st.sampled_from([
            f"filename={filename}",                                      # unquoted, maybe with spaces or ;
            f"filename*=UTF-8''{quote(filename, safe='')}",
            f"filename*=utf-8'en'{quote(filename, safe='')}",
            f"filename*=ISO-8859-1''{quote(filename.encode('latin-1', 'replace'), safe='')}",
            f"filename*={quote(filename)}",                               # no charset
            f"filename=\"ascii.txt\"; filename*=UTF-8''{quote(filename, safe='')}",
            "filename=",
            'filename=""',
            f"filename={quoted(filename)}; filename=other.txt",           # twice
        ]), odds=3))
    if draw(st.integers(0, 4)) == 4:
        params.append(draw(st.sampled_from(["size=12", "x", ";", "=", 'a="b', "name=other", "creation-date=x"])))
    if draw(st.integers(0, 4)) == 4:
        params = draw(st.permutations(params))
    separator = usually(draw, "; ", st.sampled_from([";", " ; ", ";\t"]), odds=6)
    return separator.join([form] + params) if form else separator.join(params)


@st.composite
def parts(draw, newline: bytes) -> bytes:
    kind = usually(draw, "file", st.sampled_from(["expires_in", "field", "other-file", "no-disposition"]), odds=3)
    content = usually(draw, TEXT, st.one_of(
        st.sampled_from([b"", TEXT[:5], b"MZ\x90\x00" + b"\x00" * 60, b"\x89PNG\r\n\x1a\n", TEXT + newline * 2]),
        st.binary(max_size=80)), odds=3)
    headers = []
    if kind == "file":
        headers.append("Content-Disposition: " + disposition(draw, "file", usually(draw, NAMES, ODD_NAMES, odds=3)))
    elif kind == "other-file":
        headers.append("Content-Disposition: " + disposition(draw, draw(st.sampled_from(["files", "FILE", ""])),
                                                             draw(NAMES)))
    elif kind == "expires_in":
        headers.append("Content-Disposition: " + disposition(draw, "expires_in", None))
        content = draw(st.sampled_from([b"60", b" 3600 ", b"0", b"-1", b"abc", b"", b"9" * 30, b"\xff"]))
    elif kind == "field":
        headers.append("Content-Disposition: " + disposition(draw, draw(st.sampled_from(["note", "", "file"])), None))
    if draw(st.booleans()):
        headers.append("Content-Type: " + usually(draw, "text/plain", st.sampled_from(
            ["application/octet-stream", "image/png", "", "text/plain; charset=utf-8", "\u00e9/x"])))
    if draw(st.integers(0, 3)) == 3:
        headers += draw(st.lists(st.sampled_from([
            "Content-Transfer-Encoding: base64", "X-Odd: \u00e9", "no colon here", ": empty name", " folded",
            "Content-Length: 3", 'Content-Disposition: form-data; name="file"; filename="second.txt"',
            "X-Long: " + "y" * 3000,
        ]), min_size=1, max_size=2))
        headers = draw(st.permutations(headers))
    encoding = usually(draw, "utf-8", "latin-1")
    head = newline.join(h.encode(encoding, "replace") for h in headers)
    return head + newline + newline + content


@st.composite
def multipart(draw) -> tuple[str, bytes]:
    # Browsers' boundaries are tokens; RFC 2046 allows more, which must then be quoted.
    boundary = usually(draw, st.text(st.sampled_from(BCHARS[:62] + "-_'"), min_size=1, max_size=40), ODD_BOUNDARY,
                       odds=6)
    body_boundary = usually(draw, boundary, ODD_BOUNDARY, odds=9)
    newline = usually(draw, b"\r\n", b"\n")
    delimiter = b"--" + body_boundary.encode("utf-8", "replace")
    preamble = usually(draw, b"", st.one_of(st.binary(max_size=40), st.just(b"preamble" + newline),
                                            st.just(delimiter + b"x" + newline), st.just(b"--" + newline)))
    epilogue = usually(draw, b"", st.one_of(st.binary(max_size=40), st.just(delimiter + newline),
                                            st.just(newline + b"trailing words")))
    body = preamble
    for part in draw(st.lists(parts(newline), min_size=usually(draw, 1, 0), max_size=4)):
        body += delimiter + newline + part + newline
    body += delimiter + usually(draw, b"--" + newline, st.sampled_from([b"--", b"-- \t" + newline, b"", newline]))
    body += epilogue
    if draw(st.integers(0, 6)) == 6:
        body = body[:draw(st.integers(0, len(body)))]      # cut short
    if draw(st.integers(0, 9)) == 9 and body:
        at = draw(st.integers(0, len(body) - 1))             # one byte changed
        body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1:]
    param = usually(draw, f"boundary={boundary}", st.sampled_from([
        f"boundary={quoted(boundary)}", f'BOUNDARY="{boundary}"', "", f"boundary={boundary}; charset=utf-8",
        f"charset=x; boundary={boundary}", f"boundary={boundary}; boundary=other", "boundary=", "boundary"]), odds=6)
    kind = usually(draw, "multipart/form-data", st.sampled_from(
        ["Multipart/Form-Data", "multipart/mixed", "application/x-www-form-urlencoded", "", "text/plain"]), odds=9)
    content_type = f"{kind}; {param}" if param and kind else kind
    return "".join(ch for ch in content_type if ch not in "\r\n"), body


def uploads_on_disk(data_dir: Path) -> set[str]:
    return {str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
            if p.is_file() and not NOT_UPLOADS.search(p.name)}


def records(app) -> set[str]:
    return {row.id for row in app.extensions["files"].each()}


def _form(*parts: tuple[str, bytes], end: bytes = b"--B--\r\n") -> tuple[str, bytes]:
    body = b"".join(b"--B\r\nContent-Disposition: form-data; " + d.encode() + b"\r\n\r\n" + c + b"\r\n"
                    for d, c in parts)
    return "multipart/form-data; boundary=B", body + end


GOOD = ('name="file"; filename="a.txt"', TEXT)


@bounded(100)
@given(multipart())
# A file is stored, then the request fails: the stored file must go again.
@example(_form(GOOD, ('name="file"; filename="b.exe"', TEXT)))
@example(_form(GOOD, end=b'--B\r\nContent-Disposition: form-data; name="file"; filename="c.txt"\r\n\r\nabc'))
@example(_form(GOOD, ('name="expires_in"', b"never")))
@example(_form(GOOD, GOOD, ('name="file"; filename="c.txt"', b"")))
def test_odd_multipart_bodies_are_stored_whole_or_refused_with_nothing_left(app, client, request_data):
    content_type, body = request_data
    data_dir = Path(app.config["DATA_DIR"])
    files_before, records_before = uploads_on_disk(data_dir), records(app)

    response = client.post("/upload", data=body, headers={"Content-Type": content_type})

    event(str(response.status_code))
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert response.mimetype == "application/json", response.mimetype
    answer = response.get_json()
    files_after, records_after = uploads_on_disk(data_dir), records(app)
    if response.status_code >= 400:
        assert isinstance(answer["error"], str) and answer["error"]
        assert files_after == files_before, f"a refused upload left {files_after - files_before}"
        assert records_after == records_before
    else:
        assert response.status_code == 201
        stored = answer.get("files") or [answer]
        assert {r["id"] for r in stored} == records_after - records_before
        # Exactly the new files' bytes were added, under their stored names; no temp file stayed.
        added = {os.path.basename(name) for name in files_after - files_before}
        assert added == {r["filename"] for r in stored}
        for r in stored:
            assert r["original_name"] and "/" not in r["original_name"]
