"""Render docs/screenshot.png: the upload page after a few uploads (with --dashboard,
docs/dashboard.png: the operators' dashboard after them).

    .venv/bin/python -m tests.gateway.make_screenshot [--dashboard] [--dark] [--width 1200] [--height 900] [--out PATH]

Starts its own validator and thumbnail servers (in process) and a gateway
subprocess on a scratch data folder, drives Debian's Chromium with Playwright,
and stops everything again.
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from tests.conftest import Running, start_gateway_process
from tests.gateway.conftest import launch_browser
from tests.processes import ROOT
from tests.samples import MZ_HEADER, make_sample
from thumbnail_service import server as thumbnail_server
from validator_service import server as validator_server


def landscape(path: Path, size=(1600, 1067)) -> Path:
    """A calm synthetic photo: sky gradient, sun, layered hills, a lake."""
    w, h = size
    img = Image.new("RGB", size)
    px = img.load()
    for y in range(h):
        t = y / h
        row = (int(120 + 110 * t), int(170 + 50 * t), int(230 - 40 * t))
        for x in range(w):
            px[x, y] = row
    draw = ImageDraw.Draw(img)
    draw.ellipse((w * 0.68, h * 0.16, w * 0.68 + 150, h * 0.16 + 150), fill=(255, 221, 140))
    for i, (base, amp, colour) in enumerate([(0.58, 60, (94, 128, 160)), (0.66, 45, (62, 110, 96)),
                                             (0.75, 35, (38, 84, 62))]):
        points = [(0, h)]
        for x in range(0, w + 20, 20):
            y = h * base - amp * math.sin(x / (170 + 60 * i) + i) - amp * 0.5 * math.sin(x / 57 + 2 * i)
            points.append((x, y))
        points.append((w, h))
        draw.polygon(points, fill=colour)
    draw.rectangle((0, h * 0.86, w, h), fill=(70, 120, 160))
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    img.save(path, "JPEG", quality=88)
    return path


def dashboard(context, page, base_url: str, files: Path) -> None:
    """A few more uploads and refusals, then the dashboard once it has drawn them."""
    refusals = [("invoice.pdf.exe", MZ_HEADER), ("notes.txt.exe", MZ_HEADER), ("photo.png", b"not a picture\n"),
                ("empty.txt", b""), ("setup.exe", MZ_HEADER)]
    for name, data in refusals:
        context.request.post(base_url + "/upload", multipart={"file": {
            "name": name, "mimeType": "application/octet-stream", "buffer": data}})
    for i in range(6):
        context.request.post(base_url + "/upload", multipart={"file": {
            "name": f"notes-{i}.txt", "mimeType": "text/plain", "buffer": b"meeting notes\n" * 400 * (i + 1)}})
    page.goto(base_url + "/dashboard")
    page.wait_for_selector("#dashboard[aria-busy='false']")
    page.wait_for_selector("#services li[data-state='SERVING']")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="default: docs/screenshot.png (docs/dashboard.png)")
    parser.add_argument("--dashboard", action="store_true", help="the dashboard (GET /dashboard) instead")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--dark", action="store_true")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "docs" / ("dashboard.png" if args.dashboard else "screenshot.png"))

    validator = Running(*validator_server.create_server("127.0.0.1:0"))
    thumbnailer = Running(*thumbnail_server.create_server("127.0.0.1:0"))
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        files = scratch / "files"
        files.mkdir()
        photo = landscape(files / "lake-at-dusk.jpg")
        report = make_sample("pdf", files).rename(files / "quarterly-report.pdf")
        renamed = files / "holiday.jpg"
        renamed.write_bytes(MZ_HEADER + bytes(4000))
        gateway = start_gateway_process(scratch / "data", validator.address, thumbnailer.address)
        playwright, browser = launch_browser()
        try:
            context = browser.new_context(viewport={"width": args.width, "height": args.height},
                                          color_scheme="dark" if args.dark else "light")
            page = context.new_page()
            # An earlier upload, so "Recent uploads" has some history.
            response = context.request.post(gateway.url + "/upload", multipart={"file": {
                "name": report.name, "mimeType": "application/pdf", "buffer": report.read_bytes()}})
            assert response.status == 201, response.text()
            page.goto(gateway.url + "/")
            page.wait_for_selector("#policy-summary:has-text('Allowed types')")
            page.set_input_files("#file-input", [str(photo), str(renamed)])
            page.wait_for_selector(".item[data-state='done'] .thumb img")
            page.wait_for_selector(".item[data-state='failed']")
            page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            page.wait_for_function("document.querySelectorAll('#recent-list li').length >= 2")
            if args.dashboard:
                dashboard(context, page, gateway.url, files)
            page.mouse.move(0, 0)
            page.evaluate("document.activeElement && document.activeElement.blur()")
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            print(args.out)
        finally:
            browser.close()
            playwright.stop()
            gateway.proc.terminate()
            gateway.proc.wait(timeout=15)
            validator.close()
            thumbnailer.close()


if __name__ == "__main__":
    main()
