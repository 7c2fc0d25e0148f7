"""The rendered page in a real browser: Debian's headless Chromium driven by Playwright.

OpenSeadragon ships inside gridtsne and is copied next to every page, so each page here is
opened with every request outside its own site refused and recorded: the page must work
offline and ask no third party for anything. The page is opened over a local HTTP server, from
a ``file://`` path, and straight from a (moto) S3 bucket.
"""
import functools
import http.server
import os
import shutil
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
PACKAGED_OSD = Path(DEFAULT_OSD_URL).parent
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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield b
        finally:
            b.close()


class _Page:
    """A page of the site, recording tile requests and errors; every request that does not
    start with one of ``allowed`` (default: the page's own folder) is refused and recorded in
    ``outside``, as on a machine without internet."""

    def __init__(self, browser, url, allowed=None):
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.errors, self.tiles, self.outside, self.requests = [], [], [], []
        allowed = tuple(allowed or (url.rsplit("/", 1)[0] + "/",))
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("requestfinished", lambda r: self.tiles.append(r.url)
                     if "/mosaic_files/" in r.url else None)

        def only_allowed(route):
            self.requests.append(route.request.url)
            if route.request.url.startswith(allowed):
                route.continue_()
            else:
                if not route.request.url.endswith("/favicon.ico"):  # the browser's own ask
                    self.outside.append(route.request.url)
                route.abort()

        self.context.route("**/*", only_allowed)
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
        assert view.tiles, "no tile was requested"
        assert any(u.endswith("/openseadragon/openseadragon.min.js") for u in view.requests)
        assert view.page.locator("#count").inner_text() == "45 images, 7 × 7 grid"
        assert view.page.evaluate("gridtsne.mode") == "openseadragon"
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
        assert view.outside == [], view.outside  # nothing asked of anyone but the site
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
            assert view.outside == [], view.outside
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


def test_page_works_offline_and_asks_no_one_else(browser, offline_tables, tmp_path,
                                                  http_site):
    """Every request but the site's own refused: the full viewer still opens, a click and
    hovering identify images, search finds a long name that wraps in the panel, and a
    ``#cell=`` link opens the page centred on that image."""
    vectors, layout, labels, cells, long_uri = offline_tables
    site = tmp_path / "site"
    render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output", str(site),
                         "--labels", labels, "--title", "Offline photos", "--cell", "64",
                         "--tile", "128"])
    assert (site / "openseadragon" / "LICENSE.txt").is_file()
    base = http_site(site)
    view = _Page(browser, base + "index.html")
    page = view.page
    try:
        view.wait_loaded()
        assert page.evaluate("gridtsne.mode") == "openseadragon"
        assert page.title() == "Offline photos · 12 images"
        # The navigation buttons are the shipped images, from the site itself.
        assert any(u.startswith(base + "openseadragon/images/") for u in view.requests)

        # A click identifies the image under the pointer; hovering another shows that one.
        uri, row, col = cells[6]
        page.mouse.click(*view.cell_point(row, col))
        page.wait_for_function("uri => document.getElementById('info-uri').textContent === uri",
                               arg=uri)
        assert page.evaluate("gridtsne.state.selected") == {"row": row, "col": col}
        assert page.locator("#info-label").inner_text() == uri.rsplit("/", 1)[-1].split("_")[0]
        other = cells[9]
        x, y = view.cell_point(other[1], other[2])
        page.mouse.move(x, y)
        page.mouse.move(x + 1, y + 1)
        page.wait_for_function("uri => document.getElementById('info-uri').textContent === uri",
                               arg=other[0])

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

        # A #cell= link opens the page on that image, centred on it.
        page.goto("about:blank")  # a new load, not a jump within the page
        page.goto(base + "index.html#cell=1,2")
        uri = next(c[0] for c in cells if (c[1], c[2]) == (1, 2))
        page.wait_for_function("uri => document.getElementById('info-uri').textContent === uri",
                               arg=uri)
        off = page.evaluate("""() => {
            const v = gridtsne.viewer, c = gridtsne.config.cell;
            const want = v.world.getItemAt(0).imageToViewportCoordinates(2.5 * c, 1.5 * c);
            const centre = v.viewport.getCenter(false);
            return [centre.x - want.x, centre.y - want.y];
        }""")
        assert abs(off[0]) < 1e-6 and abs(off[1]) < 1e-6, off
        assert view.outside == [] and not view.errors, (view.outside, view.errors)
    finally:
        view.close()


def test_another_openseadragon_copy_by_url_or_file(browser, tables, tmp_path, http_site):
    """``--osd_url`` still names another copy: a URL the page loads it from (here another
    local server), or a local file copied next to the page."""
    base, vectors, layout, labels, cells = tables
    mirror = tmp_path / "mirror"
    shutil.copytree(PACKAGED_OSD, mirror / "osd")
    mirror_url = http_site(mirror)
    by_url = tmp_path / "by-url"
    summary = _render(vectors, layout, labels, str(by_url), "--cell", "32",
                      "--osd_url", mirror_url + "osd/openseadragon.min.js")
    assert summary["osd_url"] == mirror_url + "osd/openseadragon.min.js"
    assert not (by_url / "openseadragon").exists()
    page_url = http_site(by_url) + "index.html"
    view = _Page(browser, page_url, allowed=(page_url.rsplit("/", 1)[0] + "/", mirror_url))
    try:
        view.wait_loaded()
        assert mirror_url + "osd/openseadragon.min.js" in view.requests
        assert view.tiles and view.outside == []
    finally:
        view.close()

    by_file = tmp_path / "by-file"
    summary = _render(vectors, layout, labels, str(by_file), "--cell", "32",
                      "--osd_url", str(mirror / "osd" / "openseadragon.min.js"))
    assert summary["osd_url"] == "openseadragon/openseadragon.min.js"
    assert (by_file / "openseadragon" / "images" / "zoomin_rest.png").exists()
    view = _Page(browser, http_site(by_file) + "index.html")
    try:
        view.wait_loaded()
        assert view.tiles and view.outside == []
    finally:
        view.close()
    assert os.path.getsize(by_file / "openseadragon" / "openseadragon.min.js") > 100_000
