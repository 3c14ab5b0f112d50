"""SVG with script, event handlers, javascript: URLs, external entities and
entity expansion: neutralized, not refused.

An SVG is a document a browser runs, and "safe SVG" filters have a long
record of bypasses; instead of trying to clean it, the service never lets it
run or be parsed where it could hurt: it is stored byte for byte, served only
as an attachment with ``Content-Security-Policy: sandbox`` and nosniff (so
even a browser that navigates to it runs it in an opaque origin, without
script), the page shows no preview of it (the thumbnail service renders raster
images only), and no service ever parses it as XML: libmagic's pattern match is
all that looks at it, so entities are never resolved or expanded.
"""
from __future__ import annotations

import time
import xml.dom.minidom
import xml.dom.pulldom
import xml.etree.ElementTree
import xml.parsers.expat
import xml.sax

import grpc
import pytest

from protos.upload.v1 import thumbnail_pb2, thumbnail_pb2_grpc
from tests.conftest import render, validate
from tests.hostile import corpus
from tests.hostile.checks import assert_refused, assert_safe_download, assert_stored


@pytest.fixture
def no_xml_parsing(monkeypatch):
    """Every XML parser in the standard library (and lxml, when installed) fails the test if called:
    the gateway, the validator and the thumbnail service all run in this process."""
    calls = []

    def trap(name):
        def refuse(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called: an upload is being parsed as XML")
        return refuse

    targets = [(xml.parsers.expat, "ParserCreate"), (xml.etree.ElementTree, "XMLParser"),
               (xml.etree.ElementTree, "fromstring"), (xml.etree.ElementTree, "parse"),
               (xml.etree.ElementTree, "iterparse"), (xml.dom.minidom, "parseString"),
               (xml.dom.minidom, "parse"), (xml.dom.pulldom, "parseString"), (xml.sax, "make_parser"),
               (xml.sax, "parseString")]
    try:
        import lxml.etree
        targets += [(lxml.etree, "fromstring"), (lxml.etree, "parse"), (lxml.etree, "XMLParser")]
    except ImportError:
        pass
    for module, attr in targets:
        monkeypatch.setattr(module, attr, trap(f"{module.__name__}.{attr}"))
    yield calls
    assert calls == []


@pytest.mark.parametrize("kind", corpus.ACTIVE_SVGS)
def test_active_svg_is_stored_as_sent_and_served_only_as_a_sandboxed_attachment(client, app, kind, no_xml_parsing):
    data = corpus.ACTIVE_SVGS[kind]
    started = time.monotonic()
    rec = assert_stored(client, app, f"{kind}.svg", data, "image/svg+xml")
    assert time.monotonic() - started < 10  # nothing expanded 10**10 lols (~30 GB)
    assert rec["thumbnail_url"] is None and rec["is_image"] is False
    response = assert_safe_download(client, rec, data)
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Content-Security-Policy"] == "sandbox"


def test_external_entities_are_never_resolved(client, app, no_xml_parsing):
    rec = assert_stored(client, app, "xxe.svg", corpus.SVG_XXE, "image/svg+xml")
    served = client.get(rec["download_url"]).data
    assert served == corpus.SVG_XXE
    assert b"root:" not in served  # /etc/passwd was not read into it
    assert b"&xxe;" in served


@pytest.mark.parametrize("kind", corpus.ACTIVE_SVGS)
def test_the_validator_decides_on_svg_without_parsing_it(validator, kind, no_xml_parsing):
    verdict = validate(validator.channel, "x.svg", corpus.ACTIVE_SVGS[kind])
    assert verdict.accepted and verdict.detected_type == "image/svg+xml"
    assert not verdict.is_image  # no dimension rule, no thumbnail


def test_the_thumbnail_service_renders_no_svg(thumbnailer, no_xml_parsing):
    renderers = thumbnail_pb2_grpc.ThumbnailStub(thumbnailer.channel).GetRenderers(
        thumbnail_pb2.GetRenderersRequest())
    assert renderers.mime_types and not any("svg" in mime for mime in renderers.mime_types)
    with pytest.raises(grpc.RpcError) as info:
        render(thumbnailer.channel, corpus.svg_billion_laughs(), "image/svg+xml")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize("name", ["logo.html", "logo.xhtml", "logo.xml", "logo.svgz", "logo.xsl"])
def test_other_names_a_browser_would_render_are_not_allowed(client, app, name):
    assert_refused(client, app, name, corpus.SVG_SCRIPT, 415, "extension_not_allowed")


@pytest.mark.parametrize("name", ["logo.png", "logo.txt", "logo.csv"])
def test_svg_under_an_image_or_text_name_is_a_content_mismatch(client, app, name):
    """So it can never be served as image/png or text/plain and sniffed into a document."""
    body = assert_refused(client, app, name, corpus.SVG_SCRIPT, 415, "content_mismatch")
    assert "image/svg+xml" in body["error"]


def test_a_share_link_to_an_svg_is_sandboxed_the_same_way(make_app):
    """A share link needs no credential, so it is what an attacker would hand out: it serves the
    same bytes with the same headers as the owner's download."""
    from urllib.parse import urlsplit

    from tests.accounts import TOKEN_SETTINGS, create_user
    from tests.hostile.checks import BOUNDARY, multipart

    client = make_app(**TOKEN_SETTINGS).test_client()
    alice = create_user(client, "alice")
    uploaded = client.post("/upload", data=multipart(b'filename="evil.svg"', corpus.SVG_SCRIPT),
                           content_type=f"multipart/form-data; boundary={BOUNDARY}", headers=alice["headers"])
    assert uploaded.status_code == 201, uploaded.get_json()
    link = client.post(f"/files/{uploaded.get_json()['id']}/share", json={"expires_in": 600},
                       headers=alice["headers"])
    assert link.status_code == 201
    # Fetched by someone else: a fresh client, no token, no session.
    response = client.application.test_client().get(urlsplit(link.get_json()["url"]).path)
    assert response.status_code == 200 and response.data == corpus.SVG_SCRIPT
    assert response.headers["Content-Type"].startswith("image/svg+xml")
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
