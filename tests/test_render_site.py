"""Overviews, page and indexes without Beam: the files the page reads, and what they contain."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from gridtsne import overview, site, storage
from gridtsne.render_inputs import grid_shape, plan_render
from gridtsne.tiles import BACKGROUND, MosaicGeometry
from tests.render_tables import layout_table


def _unwrap(js):
    """The (name, data) a JSONP index file hands to gridtsneData."""
    m = re.fullmatch(r'gridtsneData\(("[^"]*"),(.*)\);\n', js.decode("utf-8"), re.S)
    assert m, js[:80]
    return json.loads(m.group(1)), json.loads(m.group(2))


def test_mosaic_overview_picks_the_level_just_large_enough():
    g = MosaicGeometry(rows=100, cols=60, cell=128, tile=256)  # 7680 x 12800
    level, size = overview.mosaic_plan(g, 4096)
    assert g.level_size(level) == (3840, 6400) and size == (2458, 4096)
    small = MosaicGeometry(rows=2, cols=3, cell=64, tile=256)
    assert overview.mosaic_plan(small, 4096) == (small.max_level, (192, 128))
    with pytest.raises(ValueError, match="longest side"):
        overview.mosaic_plan(g, 0)


def test_mosaic_overview_is_pasted_from_tiles():
    g = MosaicGeometry(rows=3, cols=5, cell=40, tile=64)  # 200 x 120
    level, (w, h) = overview.mosaic_plan(g, 100)
    colours = {}

    def read_tile(lv, tx, ty):
        assert lv == level
        x0, y0, x1, y1 = g.tile_box(lv, tx, ty)
        colours[(tx, ty)] = (40 * tx + 20, 60 * ty + 30, 99)
        return Image.new("RGB", (x1 - x0, y1 - y0), colours[(tx, ty)])

    img = overview.compose_mosaic_overview(g, read_tile, 100)
    assert img.size == (w, h) == (100, 60)
    lw, _ = g.level_size(level)
    arr = np.asarray(img)
    for (tx, ty), colour in colours.items():
        x0, y0, x1, y1 = g.tile_box(level, tx, ty)
        s = w / lw
        cx, cy = int((x0 + x1) / 2 * s), int((y0 + y1) / 2 * s)
        assert tuple(arr[cy, cx]) == colour


def test_tsne_canvas_blocks_and_stitching():
    canvas = overview.TsneCanvas.plan(-10, 10, -5, 5, count=10_000, cell=128, longest=2048)
    assert canvas.width == 2048 and canvas.height == 1024
    assert canvas.point == 2048 // 100
    assert canvas.position(-10, -5) == (0, 0)
    assert canvas.position(10, 5) == (2048 - canvas.point, 1024 - canvas.point)
    assert canvas.blocks(500, 10, 20, 20) == [(0, 0), (1, 0)]
    red = Image.new("RGB", (20, 20), (250, 0, 0))
    blocks = [(bx, by, overview.paint_block(canvas, bx, by, [(0, 500, 10, red)]))
              for bx, by in [(0, 0), (1, 0)]]
    out = np.asarray(overview.stitch_blocks(canvas, blocks))
    assert tuple(out[15, 505]) == (250, 0, 0) and tuple(out[15, 515]) == (250, 0, 0)
    assert tuple(out[600, 600]) == BACKGROUND
    with pytest.raises(ValueError, match="finite"):
        overview.TsneCanvas.plan(0, float("nan"), 0, 1, count=3, cell=64)


def test_packed_points_come_back_as_they_went():
    points = [((3, 4), 10, 20, 2, 3, bytes(range(18))), ((0, 1), 0, 0, 1, 1, b"abc"),
              ((7, 7), 5, 6, 3, 2, bytes(range(100, 118)))]
    back = overview.unpack_points(overview.pack_points(points))
    assert [(o, px, py, w, h, bytes(raw)) for o, px, py, w, h, raw in back] == points
    assert overview.unpack_points(overview.pack_points([])) == []
    numbers, pixels = overview.pack_points(points)
    with pytest.raises(ValueError, match="hold 38 bytes of pixels, their sizes 39"):
        overview.unpack_points((numbers, pixels[:-1]))


def test_cell_shard_and_search_index_are_jsonp():
    name, data = site.cell_shard(1, 0, [(33, 2, "s3://b/x/cat.jpg", "cat", 640, 480, 1234),
                                        (32, 5, "s3://b/x/</script>.jpg", None, None, None, None)])
    assert name == "cells/1_0.js"
    key, doc = _unwrap(data)
    assert key == "cells/1_0"
    assert doc["cells"][0] == [32, 5, "s3://b/x/</script>.jpg", None, None, None, None]
    assert b"</script>" not in data  # cannot end an inline script early
    with pytest.raises(ValueError, match="not in block"):
        site.cell_shard(0, 0, [(40, 0, "x", None, None, None, None)])

    entries = [(f"/p/{n:04d}.jpg", n // 10, n % 10) for n in range(25)]
    chunks = site.search_chunks("00", entries, chunk=10)
    assert [c[2][3] for c in chunks] == [10, 10, 5]
    first_name, first = _unwrap(chunks[0][1])
    assert first["entries"][0] == ["0000.jpg", "/p/0000.jpg", 0, 0]
    directory = _unwrap(site.search_directory([c[2] for c in reversed(chunks)]))[1]
    assert [c[0] for c in directory["chunks"]] == ["0000.jpg", "0010.jpg", "0020.jpg"]
    assert directory["chunks"][0][2] == first_name


def test_labels_resolve_relative_paths_against_the_csv(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "labels.csv").write_text(
        "path,label\ntest/cat/1.jpg,cat\n/abs/dog.jpg,dog\n")
    got = dict(site.read_labels(str(tmp_path / "set" / "labels.csv")))
    assert got == {f"{tmp_path}/set/test/cat/1.jpg": "cat", "/abs/dog.jpg": "dog"}
    assert site.uri_key(f"file://{tmp_path}/set/test/cat/../cat/1.jpg") in got
    (tmp_path / "u.csv").write_text("uri,label\ns3://b/k.jpg,x\n")
    assert dict(site.read_labels(str(tmp_path / "u.csv"))) == {"s3://b/k.jpg": "x"}
    (tmp_path / "bad.csv").write_text("file,class\na,b\n")
    with pytest.raises(ValueError, match=r"needs columns 'label' and 'uri' or 'path'"):
        list(site.read_labels(str(tmp_path / "bad.csv")))


def test_index_html_carries_the_config_and_osd_url():
    config = site.PageConfig(title="Cats & <dogs>", rows=3, cols=4, cell=128, tile=256,
                             ext="jpg", width=512, height=384, images=11,
                             osd_url="openseadragon/openseadragon.min.js")
    page = site.index_html(config).decode()
    assert "<title>Cats &amp; &lt;dogs&gt; · 11 images</title>" in page
    assert "<h1>Cats &amp; &lt;dogs&gt;</h1>" in page
    assert 'src="openseadragon/openseadragon.min.js"' in page
    inline = re.search(r'<script id="gridtsne-config" type="application/json">(.*?)</script>',
                       page, re.S).group(1)
    cfg = json.loads(inline)
    assert cfg["tileSource"]["Image"]["Size"] == {"Width": "512", "Height": "384"}
    assert cfg["tileSource"]["Image"]["Url"] == "mosaic_files/"
    assert (cfg["rows"], cfg["cols"], cfg["cell"], cfg["images"]) == (3, 4, 128, 11)


def test_collection_title_names_the_folder_of_the_input():
    assert site.collection_title(["s3://photos/2024/**"]) == "2024"
    assert site.collection_title(["/data/clothing-small"]) == "clothing-small"
    assert site.collection_title(["/data/clothing-small/"]) == "clothing-small"
    assert site.collection_title(["gs://b/cats/*.jpg", "/x/dogs"]) == "cats"
    assert site.collection_title(["s3://b/lists/manifest.txt"]) == "lists"
    assert site.collection_title(["s3://bucket/**"]) == "bucket"
    assert site.collection_title([]) is None


def test_local_osd_copy_goes_next_to_the_page(tmp_path):
    src = tmp_path / "osd" / "build"
    (src / "images").mkdir(parents=True)
    (src / "openseadragon.min.js").write_text("window.OpenSeadragon = function () {};")
    (src / "images" / "zoomin_rest.png").write_bytes(b"png")
    out = tmp_path / "site"
    files = site.read_osd_files(str(src / "openseadragon.min.js"))
    assert site.write_osd_files(files, str(out)) == "openseadragon/openseadragon.min.js"
    assert (out / "openseadragon" / "images" / "zoomin_rest.png").read_bytes() == b"png"
    with pytest.raises(ValueError, match="existing local file"):
        site.read_osd_files(str(tmp_path / "nope.js"))


def test_plan_reads_the_grid_from_the_layout(tmp_path):
    cells = [("a", 0, 0), ("b", 2, 3), ("c", 1, 1)]
    url = str(tmp_path / "layout.parquet")
    storage.write_parquet(url, layout_table(cells, 4, 5))
    plan = plan_render(url, cell=64, tile=128)
    assert (plan.geometry.rows, plan.geometry.cols, plan.images, plan.holes) == (4, 5, 3, 17)
    # Without a declared shape the grid is as large as its cells.
    storage.write_parquet(url, layout_table(cells, 4, 5, meta_keys=None))
    assert (plan_render(url).geometry.rows, plan_render(url).geometry.cols) == (3, 4)
    assert grid_shape({"grid_rows": 7, "grid_cols": 8}) == (7, 8)
    assert grid_shape({"grid": [2, 9]}) == (2, 9)
    storage.write_parquet(url, layout_table(cells, 2, 2))
    with pytest.raises(ValueError, match="declares a 2x2 grid but has a cell at row 2, col 3"):
        plan_render(url)
    import pyarrow as pa
    storage.write_parquet(url, pa.table({"uri": ["a"], "row": [0]}))
    with pytest.raises(ValueError, match=r"lacks columns \['col', 'x', 'y'\]"):
        plan_render(url)


def test_openseadragon_ships_inside_the_package(tmp_path):
    """The page's viewer is the npm package's build, with its licence, and setup.py ships it:
    a build of the package holds every file of gridtsne/web/, the OpenSeadragon copy included."""
    import subprocess
    import sys
    from pathlib import Path

    files = dict(site.read_osd_files(site.DEFAULT_OSD_URL))
    assert files["openseadragon.min.js"].startswith(
        f"//! openseadragon {site.OSD_VERSION}\n".encode())
    assert b"Redistribution and use in source and binary forms" in files["LICENSE.txt"]
    assert "images/zoomin_rest.png" in files and "images/home_rest.png" in files
    repo = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib",
                    str(tmp_path / "lib")], cwd=repo, check=True, capture_output=True)
    web = repo / "gridtsne" / "web"
    source = {p.relative_to(web) for p in web.rglob("*") if p.is_file()}
    built = {p.relative_to(tmp_path / "lib" / "gridtsne" / "web")
             for p in (tmp_path / "lib" / "gridtsne" / "web").rglob("*") if p.is_file()}
    assert source == built and len(source) > 40


def test_packaged_openseadragon_travels_to_workers_by_reference():
    """Every render configuration holds the viewer's files; the packaged copy pickles as a
    reference a worker resolves from its own gridtsne, not as 0.5 MB in each transform."""
    import pickle

    import cloudpickle

    files = site.read_osd_files(site.DEFAULT_OSD_URL)
    assert sum(len(data) for _, data in files) > 300_000
    for dumps in (pickle.dumps, cloudpickle.dumps):
        blob = dumps(files)
        assert len(blob) < 1_000 and pickle.loads(blob) == files
    # A user's copy elsewhere is carried as bytes: workers cannot see the launcher's disk.
    assert not isinstance(site.read_osd_files(__file__), site.PackagedOsdFiles)
