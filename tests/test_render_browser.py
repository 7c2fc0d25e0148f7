"""The rendered page in a real browser: Debian's headless Chromium driven by Playwright.

OpenSeadragon comes from npm (``tests/web``, ``npm ci``) and is served in place of the CDN,
since this machine has no internet. The page is opened over a local HTTP server, from a
``file://`` path, and straight from a (moto) S3 bucket.
"""
import functools
import http.server
import mimetypes
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from gridtsne.site import DEFAULT_OSD_URL
from pipelines import render as render_pipeline
from tests.conftest import require_or_skip
from tests.render_tables import real_photos, thumbnail_jpeg, write_tables

CHROMIUM = "/usr/bin/chromium"
OSD_BUILD = (Path(__file__).parent / "web" / "node_modules" / "openseadragon" / "build"
             / "openseadragon")
CDN_PREFIX = DEFAULT_OSD_URL.rsplit("/", 1)[0] + "/"
ROWS = COLS = 7


def _variants(arr):
    img = Image.fromarray(arr)
    w, h = img.size
    return {"": img, "_flip": ImageOps.mirror(img), "_gray": ImageOps.grayscale(img).convert("RGB"),
            "_crop": img.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)),
            "_turn": img.rotate(90, expand=True)}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """45 real-photo images on a 7x7 grid (4 holes) and labels for them."""
    base = tmp_path_factory.mktemp("browser")
    records, lines = [], ["uri,label"]
    for name, arr in sorted(real_photos().items()):
        for suffix, img in _variants(arr).items():
            records.append({"uri": f"/photos/{name}{suffix}.jpg",
                            "thumbnail": thumbnail_jpeg(np.asarray(img)),
                            "width": img.width, "height": img.height})
            lines.append(f"/photos/{name}{suffix}.jpg,{name}")
    cells = [(r["uri"], i // COLS, i % COLS) for i, r in enumerate(records)]
    vectors, layout = write_tables(str(base / "in"), records, cells, ROWS, COLS)
    labels = base / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return base, vectors, layout, str(labels), cells


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        require_or_skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    if not (OSD_BUILD / "openseadragon.min.js").exists():
        require_or_skip("tests/web/node_modules is missing (npm ci in tests/web)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


def _serve_osd(route):
    """Answer a CDN request for OpenSeadragon from the npm package."""
    rel = route.request.url[len(CDN_PREFIX):].split("?")[0]
    path = (OSD_BUILD / rel).resolve()
    if OSD_BUILD.resolve() not in path.parents or not path.is_file():
        route.fulfill(status=404, body="not in the npm package")
        return
    route.fulfill(status=200, body=path.read_bytes(),
                  content_type=mimetypes.guess_type(str(path))[0] or "application/octet-stream")


class _Page:
    """A page of the site with the CDN intercepted, recording tile requests and errors."""

    def __init__(self, browser, url):
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.errors, self.tiles, self.osd_requests = [], [], []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("requestfinished", lambda r: self.tiles.append(r.url)
                     if "/mosaic_files/" in r.url else None)

        def osd(route):
            self.osd_requests.append(route.request.url)
            _serve_osd(route)

        self.page.route(CDN_PREFIX + "**", osd)
        self.page.goto(url)

    def wait_loaded(self, timeout=30_000):
        self.page.wait_for_function(
            "() => window.gridtsne && gridtsne.state.opened && "
            "gridtsne.viewer.world.getItemAt(0).getFullyLoaded()", timeout=timeout)

    def cell_point(self, row, col):
        """Page coordinates of a cell's centre."""
        return self.page.evaluate(
            """([row, col]) => {
                 const g = window.gridtsne, c = g.config.cell;
                 const item = g.viewer.world.getItemAt(0);
                 const p = item.imageToViewerElementCoordinates(
                     new OpenSeadragon.Point((col + 0.5) * c, (row + 0.5) * c));
                 const r = g.viewer.element.getBoundingClientRect();
                 return [r.left + p.x, r.top + p.y];
               }""", [row, col])

    def top_level_tiles(self, level):
        return [u for u in self.tiles if f"/mosaic_files/{level}/" in u]

    def close(self):
        self.context.close()


def _render(vectors, layout, labels, out, *extra):
    return render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output", out,
                                "--labels", labels, "--title", "Browser test", *extra])


@pytest.fixture
def http_site(tmp_path):
    """A local HTTP server on 127.0.0.1 for a folder; yields a function folder -> base URL."""
    servers = []

    def serve(folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_page_pans_zooms_and_shows_the_clicked_image(browser, tables, tmp_path, http_site):
    base, vectors, layout, labels, cells = tables
    site = tmp_path / "site"
    summary = _render(vectors, layout, labels, str(site), "--projector")
    assert summary["projector"]["points"] == 45
    g_max = summary["levels"] - 1
    view = _Page(browser, http_site(site) + "index.html")
    try:
        view.wait_loaded()
        assert view.osd_requests and view.osd_requests[0] == DEFAULT_OSD_URL
        assert view.tiles, "no tile was requested"
        assert view.page.locator("#count").inner_text() == "45 images, 7 × 7 grid"
        # With OpenSeadragon loaded, the page is the full viewer, without the fallback's notice.
        assert view.page.evaluate("gridtsne.mode") == "openseadragon"
        assert view.page.locator("#notice").count() == 0
        assert view.page.title() == "Browser test · 45 images"

        # Zoom in with the mouse wheel over the middle of the mosaic: full-resolution tiles load.
        vx, vy = view.cell_point(3, 3)
        for _ in range(6):
            view.page.mouse.move(vx, vy)
            view.page.mouse.wheel(0, -400)
            view.page.wait_for_timeout(150)
        view.page.wait_for_function("() => !gridtsne.viewer.viewport.getZoom() ? false : "
                                    "gridtsne.viewer.viewport.getZoom() > 2")
        view.wait_loaded()
        assert view.top_level_tiles(g_max), sorted(set(view.tiles))[:5]

        # Click the cell under the pointer's view and read what the panel says.
        uri, row, col = next(c for c in cells if (c[1], c[2]) == (3, 3))
        x, y = view.cell_point(row, col)
        view.page.mouse.click(x, y)
        view.page.wait_for_function(
            "uri => document.getElementById('info-uri').textContent === uri", arg=uri)
        info = view.page.locator("#info")
        assert info.get_attribute("data-row") == "3" and info.get_attribute("data-col") == "3"
        label = uri.split("/")[-1].split("_")[0].removesuffix(".jpg")  # the photo's name
        assert view.page.locator("#info-label").inner_text() == label
        assert view.page.locator("#info-link").get_attribute("href") == "file://" + uri
        assert "row 3, column 3" in view.page.locator("#info-meta").inner_text()
        view.page.screenshot(path=str(tmp_path / "page-zoomed.png"))

        # Search by name: jumps to the image and selects it.
        target = next(c for c in cells if c[0].endswith("/chelsea_crop.jpg"))
        view.page.fill("#search", "chelsea_crop")
        view.page.press("#search", "Enter")
        view.page.wait_for_function(
            "uri => document.getElementById('info-uri').textContent === uri", arg=target[0])
        assert view.page.evaluate("gridtsne.state.selected") == {"row": target[1], "col": target[2]}
        view.wait_loaded()
        # A name shared by several images lists them instead.
        view.page.fill("#search", "coffee")
        view.page.press("#search", "Enter")
        view.page.wait_for_function("() => document.querySelectorAll('#results li').length === 5")

        # An empty cell (a hole) says so.
        view.page.evaluate("gridtsne.jumpTo(6, 6)")
        view.page.wait_for_function(
            "() => document.getElementById('info-uri').textContent === '(empty cell)'")
        view.page.evaluate("gridtsne.select(3, 3)")
        view.page.screenshot(path=str(tmp_path / "page.png"))
        assert not view.errors, view.errors
    finally:
        view.close()
    shot = Image.open(tmp_path / "page-zoomed.png").convert("RGB")
    viewer_px = np.asarray(shot)[100:800, 100:900].astype(float)
    assert viewer_px.std() > 25, "the viewer shows no photo"


def test_page_works_from_a_local_file_and_from_a_bucket(browser, tables, tmp_path, s3_bucket,
                                                        s3_server):
    base, vectors, layout, labels, cells = tables
    site = tmp_path / "site"
    _render(vectors, layout, labels, str(site), "--cell", "64", "--format", "webp")
    bucket_site = f"s3://{s3_bucket}/maps/run1/site"
    _render(vectors, layout, labels, bucket_site, "--cell", "64")
    # As for any site served from a bucket: anyone may read its objects.
    import json

    import boto3
    boto3.client("s3", endpoint_url=s3_server).put_bucket_policy(
        Bucket=s3_bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{s3_bucket}/*"}]}))
    uri, row, col = cells[10]
    for url in (site.joinpath("index.html").as_uri(),
                f"{s3_server}/{s3_bucket}/maps/run1/site/index.html"):
        view = _Page(browser, url)
        try:
            view.wait_loaded()
            assert view.tiles, url
            # Hovering shows the image: the cell index loads from file:// and the bucket too.
            x, y = view.cell_point(row, col)
            view.page.mouse.move(x, y)
            view.page.mouse.move(x + 1, y + 1)
            view.page.wait_for_function(
                "uri => document.getElementById('info-uri').textContent === uri", arg=uri)
            assert not [e for e in view.errors if "favicon" not in e], (url, view.errors)
        finally:
            view.close()


LONG_NAME = ("a_very_long_file_name_that_goes_on_" * 6) + "chelsea.jpg"


@pytest.fixture(scope="module")
def offline_tables(tmp_path_factory):
    """12 real photos on a 4x4 grid, one of them under a very long URL."""
    base = tmp_path_factory.mktemp("offline")
    records, lines = [], ["uri,label"]
    for name, arr in sorted(real_photos().items()):
        for suffix, img in list(_variants(arr).items())[:2]:
            records.append({"uri": f"/photos/{name}{suffix}.jpg",
                            "thumbnail": thumbnail_jpeg(np.asarray(img)),
                            "width": img.width, "height": img.height})
    records = records[:11]
    long_uri = "s3://a-bucket-with-a-long-name/" + "deeply/nested/folder/" * 8 + LONG_NAME
    records.append({**records[0], "uri": long_uri})
    for r in records:
        lines.append(f"{r['uri']},{r['uri'].rsplit('/', 1)[-1].split('_')[0]}")
    cells = [(r["uri"], i // 4, i % 4) for i, r in enumerate(records)]
    vectors, layout = write_tables(str(base / "in"), records, cells, 4, 4)
    labels = base / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    return vectors, layout, str(labels), cells, long_uri


def _fit_box(page, width, height):
    """Page coordinates (left, top, scale) of the whole mosaic as the built-in viewer first
    shows it: as large as it fits in the viewer element, centred."""
    r = page.locator("#viewer").bounding_box()
    scale = min(r["width"] / width, r["height"] / height)
    return (r["x"] + (r["width"] - width * scale) / 2, r["y"] + (r["height"] - height * scale) / 2,
            scale)


def test_page_works_offline_with_the_built_in_viewer(browser, offline_tables, tmp_path,
                                                     http_site):
    vectors, layout, labels, cells, long_uri = offline_tables
    site = tmp_path / "site"
    summary = render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output",
                                   str(site), "--labels", labels, "--title", "Offline photos",
                                   "--cell", "64", "--tile", "128"])
    base = http_site(site)
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    blocked, errors, tiles = [], [], []

    def only_local(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:  # the CDN and anything else outside: as on a machine without internet
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfinished", lambda r: tiles.append(r.url) if "/mosaic_files/" in r.url else None)
    try:
        page.goto(base + "index.html")
        page.wait_for_function("() => window.gridtsne && gridtsne.state.opened && "
                               "gridtsne.viewer.fullyLoaded()", timeout=30_000)
        assert blocked == [DEFAULT_OSD_URL]
        assert page.evaluate("gridtsne.mode") == "fallback"
        assert "could not be loaded" in page.locator("#notice").inner_text()
        assert page.title() == "Offline photos · 12 images"

        # The screenshot shows the mosaic: its pixels match the overview image.
        width, height = 4 * 64, 4 * 64
        left, top, scale = _fit_box(page, width, height)
        page.screenshot(path=str(tmp_path / "offline.png"))
        shot = Image.open(tmp_path / "offline.png").convert("RGB")
        shown = shot.crop((round(left), round(top), round(left + width * scale),
                           round(top + height * scale))).resize((64, 64), Image.BILINEAR)
        mosaic = Image.open(site / "mosaic.jpg").convert("RGB").resize((64, 64), Image.BILINEAR)
        shown, mosaic = np.asarray(shown, float), np.asarray(mosaic, float)
        assert shown.std() > 25, "the viewer shows no photo"
        same = np.abs(shown - mosaic).mean()
        flipped = np.abs(shown - mosaic[:, ::-1]).mean()
        assert same < 12 and same < flipped / 2, (same, flipped)

        def point(row, col):
            return left + (col + 0.5) * 64 * scale, top + (row + 0.5) * 64 * scale

        # A click identifies the image under the pointer.
        uri, row, col = cells[6]
        page.mouse.click(*point(row, col))
        page.wait_for_function("uri => document.getElementById('info-uri').textContent === uri",
                               arg=uri)
        assert page.evaluate("gridtsne.state.selected") == {"row": row, "col": col}
        assert page.locator("#info-label").inner_text() == uri.rsplit("/", 1)[-1].split("_")[0]
        # Hovering another cell shows that one.
        other = cells[9]
        page.mouse.move(*point(other[1], other[2]))
        page.wait_for_function("uri => document.getElementById('info-uri').textContent === uri",
                               arg=other[0])

        # Zooming with the wheel loads the full-resolution tiles.
        x, y = point(1, 1)
        for _ in range(4):
            page.mouse.move(x, y)
            page.mouse.wheel(0, -300)
            page.wait_for_timeout(100)
        page.wait_for_function("() => gridtsne.viewer.fullyLoaded()")
        top_level = summary["levels"] - 1
        assert any(f"/mosaic_files/{top_level}/" in u for u in tiles), sorted(set(tiles))
        # Dragging pans the view.
        before = page.evaluate("[gridtsne.viewer.view.ox, gridtsne.viewer.view.oy]")
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x - 120, y - 80, steps=5)
        page.mouse.up()
        after = page.evaluate("[gridtsne.viewer.view.ox, gridtsne.viewer.view.oy]")
        assert after[0] > before[0] and after[1] > before[1], (before, after)
        # Two fingers moving together zoom out (touch pointers, as a phone sends them).
        zoom = page.evaluate("""() => {
            const c = gridtsne.viewer.canvas, r = c.getBoundingClientRect(), s0 = gridtsne.viewer.view.s;
            const send = (type, id, x) => c.dispatchEvent(new PointerEvent(type, {pointerId: id,
                pointerType: "touch", clientX: r.left + x, clientY: r.top + 200, bubbles: true}));
            send("pointerdown", 11, 300); send("pointerdown", 12, 500);
            send("pointermove", 12, 400); send("pointerup", 11, 300); send("pointerup", 12, 400);
            return gridtsne.viewer.view.s / s0;
        }""")
        assert 0.45 < zoom < 0.55, zoom

        # Search jumps to the image; its long URL wraps in the side panel.
        page.fill("#search", LONG_NAME[:40])
        page.press("#search", "Enter")
        page.wait_for_function("uri => document.getElementById('info-uri').textContent === uri",
                               arg=long_uri)
        assert page.evaluate("gridtsne.state.selected") == {"row": 2, "col": 3}
        panel = page.evaluate("(() => { const p = document.getElementById('panel');"
                              " return [p.scrollWidth, p.clientWidth]; })()")
        assert panel[0] <= panel[1], panel
        assert page.locator("#info-uri").bounding_box()["height"] > 40  # several lines
        page.screenshot(path=str(tmp_path / "offline-found.png"))

        # A #cell= link opens the page on that image, as with OpenSeadragon.
        page.goto("about:blank")  # a new load, not a jump within the page
        page.goto(base + "index.html#cell=1,2")
        uri = next(c[0] for c in cells if (c[1], c[2]) == (1, 2))
        page.wait_for_function("uri => document.getElementById('info-uri').textContent === uri",
                               arg=uri)
        # ... centred on it.
        centre = page.evaluate("""() => {
            const v = gridtsne.viewer, c = gridtsne.config.cell;
            const p = v.imageToElement({x: 2.5 * c, y: 1.5 * c});
            return [p.x - v.element.clientWidth / 2, p.y - v.element.clientHeight / 2];
        }""")
        assert abs(centre[0]) < 2 and abs(centre[1]) < 2, centre
        assert set(blocked) == {DEFAULT_OSD_URL} and not errors, (blocked, errors)
    finally:
        context.close()


def test_local_openseadragon_copy_is_used(browser, tables, tmp_path, http_site):
    if not (OSD_BUILD / "openseadragon.min.js").exists():
        require_or_skip("tests/web/node_modules is missing (npm ci in tests/web)")
    base, vectors, layout, labels, cells = tables
    site = tmp_path / "site"
    summary = _render(vectors, layout, labels, str(site), "--cell", "32",
                      "--osd_url", str(OSD_BUILD / "openseadragon.min.js"))
    assert summary["osd_url"] == "openseadragon/openseadragon.min.js"
    assert (site / "openseadragon" / "images" / "zoomin_rest.png").exists()
    view = _Page(browser, http_site(site) + "index.html")
    try:
        view.wait_loaded()
        assert view.osd_requests == []  # nothing fetched from the CDN
        assert view.tiles
    finally:
        view.close()
    assert os.path.getsize(site / "openseadragon" / "openseadragon.min.js") > 100_000
