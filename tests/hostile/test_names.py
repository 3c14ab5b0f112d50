"""Hostile file names through the real gateway: the name is metadata only.

A name never chooses where bytes go (stored names are random hex plus the
validated extension), never chooses the type (the last real extension must
be allowed and the content must agree), and comes back sanitized: one path
component, no control or bidi characters, NFC, at most 255 bytes, in a
Content-Disposition that no CR/LF can split.
"""
from __future__ import annotations

import base64
import unicodedata

import pytest

from gateway.ingest.names import sanitize
from tests.hostile.checks import (assert_nothing_stored, assert_refused, assert_safe_download, assert_stored,
                                  assert_unsplittable, filename_param, post_raw, stored_files)
from tests.hostile.corpus import PHP_SCRIPT, genuine

TEXT = b"just some words\n"


@pytest.mark.parametrize("raw,kept", [
    # NUL: C code (and old PHP) would stop reading at it: "shell.php\0.txt" is shell.php there.
    ("shell.php\x00.txt", "shell.php.txt"),
    ("a\x00\x00b.txt", "ab.txt"),
    # RTLO (U+202E) shows "invoice\u202etxt.exe" as "invoiceexe.txt"; here the last extension is what counts.
    ("harmless\u202egpj.txt", "harmlessgpj.txt"),
    ("a\u2066b\u2069c\u200fd\u061ce.txt", "abcde.txt"),          # isolates, RLM, ALM
    # Paths, either separator, absolute, drive letters, UNC, URL-encoded (kept literally: never decoded).
    ("../../../../etc/cron.d/evil.txt", "evil.txt"),
    ("..\\..\\..\\Windows\\System32\\drivers\\etc\\hosts.txt", "hosts.txt"),
    ("/var/www/html/index.txt", "index.txt"),
    ("C:\\inetpub\\wwwroot\\web.txt", "web.txt"),
    ("\\\\server\\share\\x.txt", "x.txt"),
    ("....//....//x.txt", "x.txt"),
    ("%2e%2e%2f%2e%2e%2fx.txt", "%2e%2e%2f%2e%2e%2fx.txt"),
    # Compatibility-normalization separators: NFKC (and Windows "best fit" code pages) make them / and \.
    ("..\uff0f..\uff0fetc\uff0fpasswd.txt", "_.._etc_passwd.txt"),   # FULLWIDTH SOLIDUS
    ("a\uff3cb.txt", "a_b.txt"),                                      # FULLWIDTH REVERSE SOLIDUS
    ("a\ufe68b.txt", "a_b.txt"),                                      # SMALL REVERSE SOLIDUS
    ("x\u2100y.txt", "x_y.txt"),                                      # ACCOUNT OF: NFKC "a/c"
    ("\u8cc7\u6599\uff0f2024.txt", "\u8cc7\u6599_2024.txt"),            # a real name keeps its words
    # CR/LF and other line breaks: the name ends up in a response header.
    ("x\r\nSet-Cookie: pwned=1\r\n\r\n.txt", "xSet-Cookie: pwned=1.txt"),
    ("a\u2028b\u2029c\x85d.txt", "a b cd.txt"),                   # LS, PS become spaces; NEL (Cc) goes
    # Trailing dots and spaces (Windows drops them: "a.txt. " is a.txt there), tabs, odd whitespace.
    ("report.txt. . .", "report.txt"),
    ("report.txt   ", "report.txt"),
    ("\tre\x0bport\x0c.txt", "report.txt"),
    ("x.txt\u3000", "x.txt"),
    # Unicode normalization: NFC composes; lookalikes stay what they are (and cannot make an extension).
    ("Cafe\u0301.txt", "Caf\u00e9.txt"),
    ("\ufb01le.txt", "\ufb01le.txt"),                                 # "ﬁ" ligature: kept, NFC leaves it
    ("zero\u200bwidth\ufeff.txt", "zerowidth.txt"),
])
def test_hostile_names_are_stored_as_sanitized_metadata(client, app, raw, kept):
    rec = assert_stored(client, app, raw, TEXT, "text/plain")
    assert rec["original_name"] == kept
    assert rec["filename"].endswith(".txt")
    assert client.get(f"/files/{rec['id']}").get_json()["original_name"] == kept
    assert_safe_download(client, rec, TEXT)


@pytest.mark.parametrize("char", ["\u0436", "\U0001f600", "a\u0301"], ids=["2-byte", "4-byte", "combining"])
def test_ten_thousand_character_names_are_cut_to_255_bytes_keeping_the_extension(client, app, char):
    raw = char * 10_000 + ".txt"
    rec = assert_stored(client, app, raw, TEXT, "text/plain")
    name = rec["original_name"]
    assert name.endswith(".txt") and 200 < len(name.encode()) <= 255
    assert unicodedata.normalize("NFC", char) in name
    response = assert_safe_download(client, rec, TEXT)
    assert len(response.headers["Content-Disposition"]) < 2000


def test_a_crlf_name_cannot_split_the_download_headers(client, app):
    raw = "report\r\nContent-Type: text/html\r\nSet-Cookie: session=stolen\r\n\r\n<script>.txt"
    rec = assert_stored(client, app, raw, TEXT, "text/plain")
    assert "\r" not in rec["original_name"] and "\n" not in rec["original_name"]
    response = assert_safe_download(client, rec, TEXT)
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert len(response.headers.getlist("Content-Type")) == 1


def test_a_stored_row_with_a_line_break_still_cannot_split_the_header(client, app):
    """Belt and braces: a record written by something other than the upload path (an older
    version, a migration, another tool on the same database) is made safe on the way out."""
    from sqlalchemy import text

    from gateway.metadata.files import repository

    rec = assert_stored(client, app, "plain.txt", TEXT, "text/plain")
    with app.app_context():
        repo = repository()
        row = repo.get(rec["id"])
        bad = "x\r\nSet-Cookie: pwned=1\r\n..\\..\\evil\u202e.txt"
        with repo.engine.begin() as conn:
            conn.execute(text("UPDATE files SET original_name = :n WHERE id = :i"), {"n": bad, "i": row.id})
    response = client.get(rec["download_url"])
    assert response.status_code == 200 and response.data == TEXT
    assert_unsplittable(response, sanitize(bad))


@pytest.mark.parametrize("raw,code", [
    # The last extension decides; anything a server would run is not on the list.
    ("a.jpg.exe", "extension_not_allowed"),
    ("shell.php", "extension_not_allowed"),
    ("shell.php.", "extension_not_allowed"),           # trailing dot: still .php
    ("shell.php . .", "extension_not_allowed"),
    ("shell.PhP", "extension_not_allowed"),
    ("shell.pHp5", "extension_not_allowed"),
    ("shell.phtml", "extension_not_allowed"),
    ("x.txt::$DATA", "extension_not_allowed"),         # NTFS alternate data stream
    ("x.asp;.jpg.exe", "extension_not_allowed"),          # IIS 6 semicolon trick, then .exe
    ("invoice\u202etxt.exe", "extension_not_allowed"),  # displays as "invoiceexe.txt"
    (".htaccess", "extension_not_allowed"),
    ("noextension", "extension_not_allowed"),
    # Lookalike extensions: what a person reads as .txt/.jpg, the rules read as something else.
    ("photo.\u0458\u0440g", "extension_not_allowed"),          # Cyrillic je, er
    ("notes.t\u0445t", "extension_not_allowed"),              # Cyrillic ha
    ("photo.\uff4a\uff50\uff47", "extension_not_allowed"),    # fullwidth jpg
    ("report\uff0etxt", "extension_not_allowed"),             # fullwidth full stop: no extension at all
    ("report\u2024txt", "extension_not_allowed"),             # one dot leader
    ("notes.tx\u0301t", "extension_not_allowed"),             # combining acute inside
    ("notes.txt\u0301", "extension_not_allowed"),             # ... or after it (no precomposed t-acute)
    # Nothing left once the path is gone.
    ("..", "extension_not_allowed"),
    ("../", "extension_not_allowed"),
    ("\x00\x00.txt", "extension_not_allowed"),          # ".txt" once NUL goes: a dot file, no extension
])
def test_names_whose_real_extension_is_not_allowed_are_refused(client, app, raw, code):
    body = assert_refused(client, app, raw, TEXT, 415, code)
    assert body["filename"] == sanitize(raw)


@pytest.mark.parametrize("raw", ["PHOTO.JPG", "photo.Jpg", "photo.jPEG", "shell.php.jpg", "shell.PHP.Jpg",
                                 "a.exe.jpg", "shell.php\x00.jpg"])
def test_case_and_double_extension_tricks_are_judged_by_content(client, app, raw):
    jpeg = genuine("jpg")
    rec = assert_stored(client, app, raw, jpeg, "image/jpeg")
    ext = raw.rsplit(".", 1)[1].lower()
    assert rec["filename"].endswith("." + ext) and rec["is_image"]
    assert_safe_download(client, rec, jpeg)
    client.delete(f"/files/{rec['id']}")
    # The same name on a script is refused: the content must be what the last extension says.
    assert_refused(client, app, raw, PHP_SCRIPT, 415, "content_mismatch")


def test_tus_metadata_names_are_sanitized_the_same_way(client, app):
    raw = "..\uff0f..\uff0f\x00evil\u202e\r\n.txt"
    created = client.post("/tus/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(len(TEXT)),
        "Upload-Metadata": "filename " + base64.b64encode(raw.encode()).decode()})
    assert created.status_code == 201
    done = client.patch(created.headers["Location"], data=TEXT, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
    assert done.status_code == 204
    rec = client.get(f"/files/{done.headers['Upload-File-Id']}").get_json()
    assert rec["original_name"] == "_.._evil.txt"
    assert len(stored_files(app)) == 1
    assert_safe_download(client, rec, TEXT)


# --- the part header on the wire ------------------------------------------

@pytest.mark.parametrize("param,kept", [
    # Browsers do not escape backslashes (WHATWG): quoted-string rules eat them, no path survives.
    (b'filename="..\\..\\Windows\\win.txt"', "Windowswin.txt"),
    # RFC 2231 percent-encoding decodes to a path, CR/LF or NUL: sanitized after decoding.
    (b"filename*=UTF-8''%2e%2e%2f%2e%2e%2fetc%2fpasswd.txt", "passwd.txt"),
    (b"filename*=UTF-8''a%0D%0ASet-Cookie%3A%20pwned%3D1.txt", "aSet-Cookie: pwned=1.txt"),
    # Browsers percent-encode CR/LF in the quoted form; that is never decoded: it stays text.
    (b'filename="a%0D%0Ab.txt"', "a%0D%0Ab.txt"),
    # Invalid UTF-8 is replaced, not passed on.
    (b"filename*=UTF-8''%FF%FEname.txt", "\ufffd\ufffdname.txt"),
])
def test_names_as_the_wire_carries_them(client, app, param, kept):
    response = post_raw(client, param, TEXT)
    rec = response.get_json()
    assert response.status_code == 201, rec
    assert rec["original_name"] == kept
    assert_safe_download(client, rec, TEXT)


def test_one_name_decides_when_a_part_header_offers_two(client, app):
    """filename and filename* disagree (or filename comes twice): the name that is validated is
    the name that is stored, so ".txt" for one and ".exe" for the other cannot both be believed."""
    for param in (b"filename=\"notes.txt\"; filename*=UTF-8''notes.exe",
                  b'filename="notes.txt"; filename="notes.exe"'):
        response = post_raw(client, param, TEXT)
        assert response.status_code == 415 and response.get_json()["code"] == "extension_not_allowed"
        assert response.get_json()["filename"] == "notes.exe"
    assert_nothing_stored(client, app)


def test_a_raw_line_break_in_the_part_header_is_not_a_file(client, app):
    # The break ends the header line: the part has no filename, so there is no file to store.
    response = post_raw(client, b'filename="a\r\nContent-Type: text/html\r\n.txt"', TEXT)
    assert response.status_code == 400
    assert "file" in response.get_json()["error"]
    assert_nothing_stored(client, app)


def test_no_character_that_folds_into_a_separator_survives():
    """Unit level, over all of Unicode: the sets in gateway/ingest/names.py are complete.
    The real separators end a path component; their lookalikes become "_"."""
    folding = [chr(c) for c in range(0x110000)
               if any(s in unicodedata.normalize("NFKC", chr(c)) for s in "/\\")]
    assert len(folding) == 9  # / and \ themselves, FULLWIDTH and SMALL forms, U+2100 A/C family
    for ch in folding:
        name = sanitize(f"..{ch}..{ch}etc{ch}passwd.txt")
        assert name in ("passwd.txt", "_.._etc_passwd.txt"), (ascii(ch), name)
        assert not any(s in unicodedata.normalize("NFKD", name) for s in "/\\"), ascii(ch)


def test_a_name_too_large_for_the_part_header_buffer_is_refused_whole(client, app):
    """A name is bounded before it is ever sanitized: a part header larger than the multipart
    parser's buffer is a malformed body, and nothing is stored."""
    response = post_raw(client, filename_param("\u0436" * 400_000 + ".txt"), TEXT)
    assert response.status_code == 400
    assert "part header that is too long" in response.get_json()["error"]
    assert_nothing_stored(client, app)
