"""gateway.tus.protocol and /tus/: whatever a client puts in the tus headers,
the parsers give a value or InvalidInput (a 400), and the server never a 5xx."""
from __future__ import annotations

import base64
import hashlib
import re
import unicodedata

from hypothesis import event, example, given
from hypothesis import strategies as st

from gateway.ingest.names import MAX_NAME_BYTES, sanitize
from gateway.tus.protocol import CHECKSUMS, parse_checksum, parse_concat, parse_metadata, parse_size, read_metadata
from protos.errors import InvalidInput
from tests.fuzz import bounded
from tests.fuzz.strategies import ANY_CHAR, HEADER_CHAR, METADATA_KEY, METADATA_VALUE, b64, header_text

TUS = {"Tus-Resumable": "1.0.0"}
UPLOAD_URL = "/tus/" + "ab" * 16


def any_header(*like: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    """For the parsers: no header, any text at all, or what a header could carry."""
    return st.one_of(st.none(), st.text(ANY_CHAR, max_size=40), *like)


def outcome(parse, *args):
    """The parser's value, or the InvalidInput it raised; anything else fails the test."""
    try:
        return parse(*args)
    except InvalidInput as exc:
        assert exc.message and exc.http_status == 400
        return exc


# --- the parsers, on any text ---

# What breaks parsers most often; anything else a header may hold now and then.
ODD_CHAR = st.one_of(st.sampled_from(["\xe9", "\x80", "\xff", " ", ",", "=", "\x00", "\t", "-", "_", "*", "/", "+"]),
                     HEADER_CHAR)
# Header values (latin-1, no CR/LF) for each header; any_header() adds the rest for the parsers.
SIZE_TEXT = st.one_of(header_text(25, "0", "1", "9"), st.integers(-5, 2**70).map(str),
                      st.integers(0, 10**19).map(lambda n: f" {n}\t"),
                      st.sampled_from(["", " ", "+1", "-0", "1_000", "0x10", "1e3", "\xb2", "12 34", "00"]))
SIZES = any_header(SIZE_TEXT, st.sampled_from(["١٢", "²"]))


@bounded(500)
@given(SIZES)
def test_parse_size_gives_a_whole_number_or_invalid_input(raw):
    value = outcome(parse_size, raw, "Upload-Length")
    if raw is None:
        assert value is None
    elif not isinstance(value, InvalidInput):
        assert type(value) is int and 0 <= value < 10**19
        assert value == int(raw.strip())


@bounded(300)
@given(st.integers(0, 10**19 - 1))
def test_parse_size_reads_every_size_it_writes(n):
    assert parse_size(str(n), "Upload-Offset") == n


METADATA_TEXT = st.one_of(
    header_text(60, "filename", "name", "type", "filetype", "expires_in", "aGVsbG8=", "w6k=", "=", "=="),
    # Almost well formed: real pairs, then a character changed or added.
    st.builds(lambda pairs, at, char, keep: (lambda s: s[:at] + char + s[at + keep:])(
        ",".join(f"{k} {b64(v)}" for k, v in pairs.items())),
        st.dictionaries(METADATA_KEY, METADATA_VALUE, min_size=1, max_size=3), st.integers(0, 80), ODD_CHAR,
        st.integers(0, 1)),
)
METADATA = any_header(METADATA_TEXT)


@bounded(800)
@given(METADATA)
@example("filename \xe9")            # found by this test: base64 of non-ASCII text raised ValueError (a 500)
@example("filename aGk=,type \u0100")
def test_parse_metadata_gives_text_or_invalid_input(raw):
    value = outcome(parse_metadata, raw)
    if isinstance(value, InvalidInput):
        return
    assert isinstance(value, dict)
    for key, text in value.items():
        assert re.fullmatch(r"[\x21-\x7e]+", key) and "," not in key
        assert isinstance(text, str)
    # What the service takes from it never raises either.
    meta = read_metadata(value)
    assert meta.original_name == "" or (len(meta.original_name.encode()) <= MAX_NAME_BYTES
                                        and unicodedata.is_normalized("NFC", meta.original_name)
                                        and "/" not in meta.original_name)
    assert len(meta.declared_type) <= 255


@bounded(500)
@given(st.dictionaries(METADATA_KEY, METADATA_VALUE, max_size=6), st.sampled_from([",", ", ", " , "]))
def test_well_formed_metadata_round_trips(metadata, separator):
    header = separator.join(f"{key} {b64(value)}" if value else key for key, value in metadata.items())
    assert parse_metadata(header) == metadata


@bounded(300)
@given(st.dictionaries(st.sampled_from(["filename", "name", "type", "filetype", "expires_in", "other"]),
                       st.text(ANY_CHAR, max_size=300), max_size=6))
def test_read_metadata_takes_any_values(values):
    meta = read_metadata(values)
    name = values.get("filename") or values.get("name") or ""
    assert (meta.original_name == "") == (name == "")
    assert meta.original_name == "" or sanitize(meta.original_name) == meta.original_name
    assert len(meta.original_name.encode()) <= MAX_NAME_BYTES
    assert len(meta.declared_type) <= 255
    assert meta.expires_in == values.get("expires_in")


CONCAT_TEXT = header_text(60, "partial", "final;", "final; ", "/tus/", "http://h/tus/", "ab" * 16, "AB" * 16,
                          "?x=1", "/")
CONCAT = any_header(CONCAT_TEXT)


@bounded(500)
@given(CONCAT)
@example("final;/tus/" + "ab" * 16 + " http://x/tus/" + "cd" * 16 + "/?a=b")
def test_parse_concat_gives_ids_or_invalid_input(raw):
    value = outcome(parse_concat, raw)
    if raw is None:
        assert value is None
    elif not isinstance(value, InvalidInput):
        kind, ids = value
        assert (kind, ids) == ("partial", []) or (kind == "final" and ids)
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


CHECKSUM_TEXT = st.one_of(
    header_text(60, *CHECKSUMS, "sha1 ", "SHA1", "crc32", "2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "=", "@"),
    st.builds(lambda algorithm, digest, pad, at, char, keep: (lambda s: s[:at] + char + s[at + keep:])(
        f"{pad}{algorithm} {base64.b64encode(digest).decode()}{pad}"),
        st.sampled_from(sorted(CHECKSUMS)), st.binary(max_size=64), st.sampled_from(["", " ", "\t"]),
        st.integers(0, 100), st.one_of(st.just(""), ODD_CHAR), st.integers(0, 1)),
)
CHECKSUM = any_header(CHECKSUM_TEXT)


@bounded(500)
@given(CHECKSUM)
@example("sha1 \xe9")                # found by this test: ValueError, not InvalidInput
def test_parse_checksum_gives_a_digest_or_invalid_input(raw):
    value = outcome(parse_checksum, raw)
    if raw is None:
        assert value is None
    elif not isinstance(value, InvalidInput):
        hasher, expected = value
        assert hasher.name in {hashlib.new(name).name for name in CHECKSUMS}
        assert isinstance(expected, bytes)


# --- through the app: never a 5xx ---

TEXT = b"plain text that the validator takes for text/plain\n" * 2


def check_answer(response) -> None:
    event(f"{response.request.method} {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:500])
    if response.status_code >= 400 and response.get_data():
        assert response.mimetype == "application/json", response.mimetype
        assert isinstance(response.get_json()["error"], str)


# Replacements for one header; None removes it.
FUZZ = {
    "Upload-Length": st.one_of(SIZE_TEXT, st.integers(0, 2 * len(TEXT)).map(str)),
    "Upload-Defer-Length": st.one_of(st.just("1"), header_text(4, "1", "0")),
    "Upload-Offset": st.one_of(SIZE_TEXT, st.integers(0, 2 * len(TEXT)).map(str)),
    "Upload-Metadata": st.one_of(METADATA_TEXT, st.dictionaries(
        st.sampled_from(["filename", "name", "filetype", "type", "expires_in"]),
        st.sampled_from(["a.txt", "x.png", "noext", "../b.TXT", "\u202egpj.exe", "60", "0", "-1", "text/plain",
                         "", "9" * 30]),
        min_size=1).map(lambda d: ",".join(f"{k} {b64(v)}" if v else k for k, v in d.items()))),
    "Upload-Concat": CONCAT_TEXT,
    "Upload-Checksum": st.one_of(CHECKSUM_TEXT, st.just("right")),
    "Content-Type": st.sampled_from(["application/offset+octet-stream", "application/offset+octet-stream; x=1",
                                     "text/plain", "", "multipart/form-data; boundary=x"]),
    "X-HTTP-Method-Override": st.sampled_from(["PATCH", "DELETE", "patch", "GET", ""]),
}


def mutate(data, headers: dict, body: bytes) -> dict:
    """``headers`` with up to three of them replaced by fuzz values, removed, or added."""
    headers = dict(headers)
    for name in data.draw(st.lists(st.sampled_from(sorted(FUZZ)), max_size=3, unique=True), label="fuzzed"):
        value = data.draw(st.one_of(st.none(), FUZZ[name]), label=name)
        if value is None:
            headers.pop(name, None)
        elif value == "right" and name == "Upload-Checksum":
            headers[name] = "sha256 " + b64(hashlib.sha256(body).digest())
        else:
            headers[name] = value
    return headers


def creation(data) -> tuple[dict, bytes]:
    """A creation request a client might well send, before mutation."""
    body = data.draw(st.sampled_from([b"", TEXT, TEXT[:10]]), label="body")
    headers = {**TUS, "Upload-Metadata": "filename " + b64("notes.txt") + ",filetype " + b64("text/plain")}
    kind = data.draw(st.sampled_from(["length", "deferred", "with-upload", "partial"]), label="kind")
    if kind == "deferred":
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(len(TEXT))
    if kind == "with-upload":
        headers["Content-Type"] = "application/offset+octet-stream"
    if kind == "partial":
        headers["Upload-Concat"] = "partial"
    return headers, body


@bounded(60)
@given(st.data())
def test_creating_uploads_with_any_headers_never_fails_on_our_side(client, data):
    headers, body = creation(data)
    response = client.post("/tus/", headers=mutate(data, headers, body), data=body)
    check_answer(response)
    if response.status_code == 201:
        check_answer(client.head(response.headers["Location"], headers=TUS))


@bounded(60)
@given(st.data())
def test_writing_with_any_headers_never_fails_on_our_side(client, data):
    headers, _ = creation(data)
    headers.pop("Content-Type", None)
    created = client.post("/tus/", headers=headers)
    assert created.status_code == 201
    url = created.headers["Location"]
    method = data.draw(st.sampled_from(["PATCH", "PATCH", "POST", "HEAD", "DELETE"]), label="method")
    body = data.draw(st.sampled_from([TEXT, TEXT[:7], TEXT + b"more", b"\x00\xff" * 9, b""]), label="body")
    base = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    if method == "POST":
        base["X-HTTP-Method-Override"] = "PATCH"
    if "Upload-Defer-Length" in headers:
        base["Upload-Length"] = str(len(body))
    response = client.open(url, method=method, headers=mutate(data, base, body), data=body)
    check_answer(response)
    # Whatever happened, the upload still answers sensibly.
    check_answer(client.head(url, headers=TUS))


@bounded(30)
@given(st.one_of(header_text(12, "1.0.0", "1.0", "0.2.2"), st.just("1.0.0")), st.sampled_from(
    ["HEAD", "PATCH", "DELETE", "POST", "OPTIONS"]), st.sampled_from([UPLOAD_URL, "/tus/", "/tus/x", "/tus/" + "0" * 32]))
def test_any_version_and_address_never_fails_on_our_side(client, version, method, url):
    check_answer(client.open(url, method=method, headers={"Tus-Resumable": version}))
