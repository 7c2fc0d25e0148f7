"""The render stage on Beam's DirectRunner: files, levels, pixels, counts, and destinations."""
import json
import re
import xml.etree.ElementTree as ET

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from gridtsne import storage, tiles
from gridtsne.tiles import BACKGROUND, MosaicGeometry
from gridtsne.site import DEFAULT_OSD_URL, read_osd_files
from pipelines import render as render_pipeline
from tests.render_tables import real_photos, thumbnail_jpeg, write_tables
from transforms.render import NAMESPACE, RenderConfig, RenderMosaic

ROWS, COLS = 4, 4


@pytest.fixture(scope="module")
def collection():
    """Nine real photos, one undecodable thumbnail, one layout row without a vectors row."""
    photos = real_photos()
    records = [{"uri": f"/photos/{name}.jpg", "thumbnail": thumbnail_jpeg(arr)}
               for name, arr in sorted(photos.items())]
    records.append({"uri": "/photos/broken.jpg", "thumbnail": b"\xff\xd8 not really"})
    cells = [(r["uri"], i // COLS, i % COLS) for i, r in enumerate(records)]
    cells.append(("/photos/no-vector.jpg", 3, 3))
    return records, cells


def _files(fs, base):
    return sorted(p[len(base):].lstrip("/") for p in fs.find(base))


def _expected_files(g):
    want = {f"{g.tile_path(level, tx, ty)}"
            for level in range(g.max_level + 1) for tx, ty in g.tile_keys(level)}
    # OpenSeadragon as packaged (script, licence, button images) goes next to every page.
    osd = {f"openseadragon/{name}" for name, _ in read_osd_files(DEFAULT_OSD_URL)}
    assert {"openseadragon/LICENSE.txt", "openseadragon/images/zoomin_rest.png"} <= osd
    return want | osd | {"mosaic.dzi", "index.html", "gridtsne.js", "gridtsne.css",
                         "mosaic.jpg", "tsne.jpg", "site.json", "cells/0_0.js",
                         "search/index.js"}


def _jsonp(data):
    return json.loads(re.fullmatch(r'gridtsneData\("[^"]*",(.*)\);\n', data.decode(), re.S)[1])


def test_render_writes_every_level_and_puts_each_thumbnail_in_its_cell(tmp_path, collection):
    records, cells = collection
    vectors, layout = write_tables(str(tmp_path / "in"), records, cells, ROWS, COLS)
    out = str(tmp_path / "site")
    config = RenderConfig(cell=96, tile=128)  # 96 px cells straddle 128 px tiles
    p = BeamTestPipeline()
    summary = p | RenderMosaic(vectors, layout, out, config)
    assert_that(summary | beam.Map(lambda s: (s["images"], s["placeholders"], s["levels"])),
                equal_to([(11, 2, 10)]))
    result = p.run()
    result.wait_until_finish()

    g = MosaicGeometry(ROWS, COLS, cell=96, tile=128)
    fs, base = storage.filesystem(out)
    files = set(_files(fs, base))
    missing = _expected_files(g) - files
    assert not missing, sorted(missing)[:5]
    assert not any(f.startswith("mosaic_files/10/") for f in files)

    root = ET.fromstring((tmp_path / "site" / "mosaic.dzi").read_bytes())
    assert root.attrib["TileSize"] == "128" and root.attrib["Format"] == "jpg"
    assert root[0].attrib == {"Width": "384", "Height": "384"}

    # Reassemble the top level from its tiles and check every cell.
    top = Image.new("RGB", (g.width, g.height))
    for tx, ty in g.tile_keys(g.max_level):
        tile = Image.open(tmp_path / "site" / g.tile_path(g.max_level, tx, ty)).convert("RGB")
        assert tile.size == tuple(np.subtract(g.tile_box(g.max_level, tx, ty)[2:],
                                              g.tile_box(g.max_level, tx, ty)[:2]))
        top.paste(tile, g.tile_box(g.max_level, tx, ty)[:2])
    arr = np.asarray(top, dtype=np.float64)

    def cell(row, col):
        return arr[row * 96:(row + 1) * 96, col * 96:(col + 1) * 96]

    def expected(data):
        canvas = Image.new("RGB", (96, 96), BACKGROUND)
        fitted = tiles.fit_thumbnail(data, g.inner)  # 94 px: 1 px padding each side
        canvas.paste(fitted, ((96 - fitted.width) // 2, (96 - fitted.height) // 2))
        return np.asarray(canvas, dtype=np.float64)

    by_uri = {r["uri"]: r["thumbnail"] for r in records}
    for uri, row, col in cells[:9]:
        diff = np.abs(cell(row, col) - expected(by_uri[uri])).mean()
        assert diff < 6, (uri, diff)  # JPEG q85 of the very same pixels
        other = cells[(cells.index((uri, row, col)) + 1) % 9][0]
        assert np.abs(cell(row, col) - expected(by_uri[other])).mean() > 15
    placeholder = np.asarray(tiles.placeholder(g.inner), dtype=np.float64)
    for row, col in [(2, 1), (3, 3)]:  # broken.jpg and no-vector.jpg
        assert np.abs(cell(row, col)[1:-1, 1:-1] - placeholder).mean() < 4
    for row, col in [(2, 2), (2, 3), (3, 0), (3, 1), (3, 2)]:  # holes
        assert np.abs(cell(row, col) - np.array(BACKGROUND)).max() < 12

    # Lower levels are the 2x2 reduction of the level above.
    below = np.asarray(Image.open(tmp_path / "site" / g.tile_path(g.max_level - 1, 0, 0))
                       .convert("RGB"), dtype=np.float64)
    assert below.shape == (128, 128, 3)
    assert np.abs(below - np.asarray(top.reduce(2).crop((0, 0, 128, 128)), float)).mean() < 4
    assert Image.open(tmp_path / "site" / g.tile_path(0, 0, 0)).size == (1, 1)

    summary = json.loads((tmp_path / "site" / "site.json").read_text())
    assert summary["placeholders"] == 2
    assert summary["placeholder_examples"] == ["/photos/broken.jpg", "/photos/no-vector.jpg"]
    assert summary["tiles_total"] == g.tile_count() == len([f for f in files
                                                            if f.startswith("mosaic_files/")])
    assert summary["grid"] == {"rows": 4, "cols": 4, "holes": 5}
    counters = {c.key.metric.name: c.committed for c in
                result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    assert counters["placeholders"] == 2 and counters["cells_drawn"] == 11
    assert counters["layout_rows_without_vectors"] == 1

    shard = _jsonp((tmp_path / "site" / "cells" / "0_0.js").read_bytes())
    by_cell = {(c[0], c[1]): c for c in shard["cells"]}
    assert len(by_cell) == 11
    assert by_cell[(0, 1)][2] == cells[1][0] and by_cell[(0, 1)][4:6] == [640, 480]
    assert by_cell[(3, 3)][2] == "/photos/no-vector.jpg" and by_cell[(3, 3)][4] is None

    mosaic = Image.open(tmp_path / "site" / "mosaic.jpg")
    assert mosaic.size == (384, 384)
    tsne = np.asarray(Image.open(tmp_path / "site" / "tsne.jpg").convert("RGB"), float)
    assert (np.abs(tsne - np.array(BACKGROUND)).sum(axis=2) > 60).mean() > 0.2  # photos drawn


def test_render_composes_after_the_step_that_writes_the_layout(collection):
    """The lead's end-to-end job: the layout is written by the same pipeline, output memory://."""
    records, cells = collection
    base = "memory://render-compose"
    vectors, _ = write_tables(base, records, cells, ROWS, COLS)
    layout_later = "memory://render-compose/later/layout.parquet"
    from tests.render_tables import layout_table

    def write_layout(_):
        storage.write_parquet(layout_later, layout_table(cells, ROWS, COLS))
        return layout_later

    out = "memory://render-compose/site"
    with BeamTestPipeline() as p:
        written = p | "Begin" >> beam.Create([None]) | "WriteLayout" >> beam.Map(write_layout)
        summary = written | RenderMosaic(vectors, layout_later, out,
                                         RenderConfig(cell=64, tile=256, fmt="webp"))
        assert_that(summary | beam.Map(lambda s: (s["images"], s["format"], s["levels"])),
                    equal_to([(11, "webp", 9)]))
    fs, path = storage.filesystem(out)
    g = MosaicGeometry(ROWS, COLS, cell=64, tile=256, fmt="webp")
    assert _expected_files(g) <= set(_files(fs, path))
    assert storage.read_bytes(f"{out}/mosaic_files/8/0_0.webp")[:4] == b"RIFF"


def test_local_labels_and_osd_are_read_on_the_launcher(tmp_path, collection):
    """Workers cannot see the launcher's disk: local --labels and --osd_url files are read
    when the job is configured, so the render succeeds after they are gone."""
    import shutil

    records, cells = collection
    vectors, layout = write_tables(str(tmp_path / "in"), records, cells, ROWS, COLS)
    launcher = tmp_path / "launcher"
    (launcher / "osd" / "images").mkdir(parents=True)
    (launcher / "osd" / "openseadragon.min.js").write_text("window.OpenSeadragon = 1;")
    (launcher / "osd" / "images" / "home_rest.png").write_bytes(b"png")
    (launcher / "labels.csv").write_text("uri,label\n/photos/chelsea.jpg,cat\n")
    out = tmp_path / "site"
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(["--vectors", vectors, "--layout", layout, "--output", str(out),
                               "--osd_url", str(launcher / "osd" / "openseadragon.min.js"),
                               "--cell", "64", "--tile", "128"])
    job = render_pipeline.job_from_options(options, str(launcher / "labels.csv"))
    shutil.rmtree(launcher)  # what a Dataflow or Flink worker sees of the launcher's files
    with beam.Pipeline() as p:
        render_pipeline.build_pipeline(p, job)
    assert (out / "openseadragon" / "openseadragon.min.js").read_text() == \
        "window.OpenSeadragon = 1;"
    assert (out / "openseadragon" / "images" / "home_rest.png").read_bytes() == b"png"
    cells_js = _jsonp((out / "cells" / "0_0.js").read_bytes())
    assert "cat" in json.dumps(cells_js)
    summary = json.loads((out / "site.json").read_text())
    assert summary["labels"] == str(launcher / "labels.csv")
    assert summary["osd_url"] == "openseadragon/openseadragon.min.js"
    with pytest.raises(ValueError, match="--labels file does not exist"):
        render_pipeline.job_from_options(options, str(launcher / "labels.csv"))


def test_a_local_labels_file_too_large_to_travel_asks_for_a_url(tmp_path, monkeypatch):
    from gridtsne import labels

    big = tmp_path / "labels.csv"
    big.write_text("uri,label\n" + "/photos/x.jpg,x\n" * 100)
    monkeypatch.setattr(labels, "MAX_LOCAL_LABELS_BYTES", 1000)
    with pytest.raises(ValueError, match="give that URL"):
        labels.labels_csv(str(big))
    assert labels.labels_csv("s3://bucket/labels.csv").data is None


def test_run_to_s3_with_labels_sets_content_types(tmp_path, collection, s3_bucket, s3_server):
    import boto3

    records, cells = collection
    vectors, layout = write_tables(f"s3://{s3_bucket}/run", records, cells, ROWS, COLS)
    labels = tmp_path / "labels.csv"
    labels.write_text("uri,label\n/photos/chelsea.jpg,cat\n/photos/rocket.jpg,rocket\n")
    out = f"s3://{s3_bucket}/run/site"
    summary = render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output", out,
                                   "--labels", str(labels), "--cell", "64", "--tile", "128",
                                   "--title", "Test photos", "--s3_endpoint_url", s3_server])
    assert summary["images"] == 11 and summary["labels"] == str(labels)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    want = {"index.html": "text/html", "mosaic.dzi": "application/xml",
            "gridtsne.js": "text/javascript", "gridtsne.css": "text/css",
            "cells/0_0.js": "text/javascript", "site.json": "application/json",
            "mosaic.jpg": "image/jpeg", "mosaic_files/8/1_1.jpg": "image/jpeg"}
    for key, ctype in want.items():
        head = s3.head_object(Bucket=s3_bucket, Key=f"run/site/{key}")
        assert head["ContentType"] == ctype, key
    shard = _jsonp(storage.read_bytes(f"{out}/cells/0_0.js"))
    labelled = {c[2]: c[3] for c in shard["cells"]}
    assert labelled["/photos/chelsea.jpg"] == "cat" and labelled["/photos/coffee.jpg"] is None
    assert b"Test photos" in storage.read_bytes(f"{out}/index.html")


def test_bad_flags_and_tables_fail_before_the_pipeline(tmp_path, collection):
    records, cells = collection
    vectors, layout = write_tables(str(tmp_path), records, cells, ROWS, COLS)
    with pytest.raises(ValueError, match="--layout is required"):
        render_pipeline.run(["--vectors", vectors, "--output", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="even integer"):
        render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output",
                             str(tmp_path / "o"), "--tile", "255"])
    with pytest.raises(ValueError, match="--osd_url must be a URL or an existing local file"):
        render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output",
                             str(tmp_path / "o"), "--osd_url", "nowhere/osd.js"])
    _, small = write_tables(str(tmp_path / "small"), records, cells, 2, 2)
    with pytest.raises(ValueError, match="declares a 2x2 grid"):
        render_pipeline.run(["--vectors", vectors, "--layout", small, "--output",
                             str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_lost_data_fails_loudly_instead_of_leaving_holes(tmp_path, collection):
    """A runner that drops elements must not yield a site that silently lacks images."""
    from gridtsne.overview import TsneCanvas
    from gridtsne.render_inputs import RenderPlan
    from gridtsne.render_outputs import check_counts
    from transforms.render import ReduceStepFn

    g = tiles.MosaicGeometry(16, 16, cell=64, tile=128)  # 1,024 px: level 8 has 2x2 tiles
    plan = RenderPlan(g, TsneCanvas.plan(0, 1, 0, 1, count=1, cell=64), 1)
    site = tmp_path / "site"
    fn = ReduceStepFn(str(site), RenderConfig(cell=64, tile=128))
    fn.setup()
    for tx, ty in g.tile_keys(8):
        storage.write_bytes(str(site / g.tile_path(8, tx, ty)),
                            tiles.encode_tile(Image.new("RGB", (128, 128), (9, 9, 9)), "jpeg"))
    three = [(8, 0, 0), (8, 1, 0), (8, 0, 1)]
    with pytest.raises(ValueError, match=r"expected \[\(8, 0, 0\), \(8, 0, 1\), \(8, 1, 0\), "
                                         r"\(8, 1, 1\)\]: the runner lost"):
        list(fn.process(((0, 0, 0), three), plan))
    out = list(fn.process(((0, 0, 0), three + [(8, 1, 1)]), plan))
    assert [o.value for o in out] == [("tiles", (level, 1)) for level in range(7, -1, -1)]
    for level in range(8):  # the one step made every level below 8
        assert Image.open(site / g.tile_path(level, 0, 0)).size == g.level_size(level)
    tsne = {"points": 9}
    check_counts(11, 2, (1, 11), (3, 11), tsne)
    with pytest.raises(ValueError, match="the search index holds 10 of 11 images"):
        check_counts(11, 2, (1, 11), (3, 10), tsne)


def test_the_tally_adds_up_however_the_runner_splits_it():
    """Every count of the render goes through one combine: split into accumulators in any
    way and merged, it must give the same totals and the first 20 placeholders by URI."""
    from transforms.render import RenderTally

    items = [("tiles", (level % 3, 2)) for level in range(30)] + [("cells", 7)] * 5
    items += [("missing", f"/p/{i:03d}.jpg") for i in range(50, 0, -1)]
    items += [("shards", (1, 4)), ("shards", (1, 3)), ("chunk", ["a", "b", "c", 2])]
    fn = RenderTally()

    def run(parts):
        accs = []
        for part in parts:
            acc = fn.create_accumulator()
            for item in part:
                acc = fn.add_input(acc, item)
            accs.append(acc)
        return fn.extract_output(fn.merge_accumulators(accs))

    whole = run([items])
    assert whole["tiles"] == {0: 20, 1: 20, 2: 20} and whole["cells"] == 35
    assert whole["placeholders"] == 50
    assert whole["examples"] == [f"/p/{i:03d}.jpg" for i in range(1, 21)]
    assert whole["shards"] == [2, 7] and whole["chunks"] == [["a", "b", "c", 2]]
    assert run([items[i::3] for i in range(3)]) == whole
    with pytest.raises(ValueError, match="unknown tally kind 'tsne'"):
        fn.add_input(fn.create_accumulator(), ("tsne", None))


def test_too_few_reduction_stages_is_a_clear_error(tmp_path, collection):
    records, cells = collection
    # An 80 x 80 grid of 64 px tiles: the blocks' roots have 20 x 20 tiles, too many for one
    # step, so the pyramid needs two reduction stages.
    vectors, layout = write_tables(str(tmp_path / "in"), records, cells, 80, 80)
    p = BeamTestPipeline()
    _ = p | RenderMosaic(vectors, layout, str(tmp_path / "site"),
                         RenderConfig(cell=64, tile=64, max_levels=1))
    with pytest.raises(Exception, match=r"RenderConfig\(max_levels=2\) or more"):
        p.run().wait_until_finish()


def test_bands_meet_the_same_on_every_runner(tmp_path):
    """A collection over two bands, one cell straddling their edge, with labels: rendered on
    the in-memory DirectRunner, the PortableRunner (with a tile pool) and the DirectRunner's
    multi_processing mode (bundles in two processes), every file is byte-identical, and the
    straddling cell shows its own thumbnail on both sides of the edge (the second band got
    its thumbnail through the route table, not a placeholder)."""
    from gridtsne.render_join import Bands
    from gridtsne.tile_workers import block_depth

    rows, cols = 200, 20
    photos = [thumbnail_jpeg(arr) for _, arr in sorted(real_photos().items())]
    records = [{"uri": f"/photos/{i:03d}.jpg", "thumbnail": photos[i % len(photos)]}
               for i in range(60)]
    records.append({"uri": "/photos/broken.jpg", "thumbnail": b"\xff\xd8 not really"})
    places = np.random.default_rng(3).choice(rows * cols, size=len(records), replace=False)
    places[:3] = [106 * cols + 3, 105 * cols + 4, 107 * cols + 5]  # at the bands' edge
    cells = [(r["uri"], int(p) // cols, int(p) % cols) for r, p in zip(records, places)]
    vectors, layout = write_tables(str(tmp_path / "in"), records, cells, rows, cols, parts=3)
    labels = tmp_path / "labels.csv"
    labels.write_text("uri,label\n/photos/000.jpg,straddler\n/photos/005.jpg,five\n"
                      "/photos/not-there.jpg,x\n")
    g = MosaicGeometry(rows, cols, cell=48, tile=64)
    assert Bands.plan(g, block_depth(g)).bands_of_cell(106, 3) == [0, 1]

    def render(name, *flags):
        out = str(tmp_path / name)
        summary = render_pipeline.run(["--vectors", vectors, "--layout", layout, "--output",
                                       out, "--cell", "48", "--tile", "64", "--labels",
                                       str(labels), *flags])
        assert (summary["images"], summary["placeholders"]) == (61, 1)
        fs, base = storage.filesystem(out)
        return {p[len(base):]: fs.cat_file(p) for p in fs.find(base)}

    one = render("in_memory", "--render_workers", "1")
    assert one == render("portable", "--runner=PortableRunner", "--job_endpoint=embed",
                         "--environment_type=LOOPBACK", "--render_workers", "2")
    assert one == render("processes", "--direct_running_mode", "multi_processing",
                         "--direct_num_workers", "2", "--render_workers", "1")

    # Cell (106, 3): x 144..192, y 5088..5136 px, in top tiles (2, 79) and (2, 80).
    top = Image.new("RGB", (64, 128))
    for ty in (79, 80):
        top.paste(Image.open(tmp_path / "in_memory" / g.tile_path(g.max_level, 2, ty)),
                  (0, (ty - 79) * 64))
    cell = np.asarray(top.crop((16, 32, 64, 80)), dtype=np.float64)
    canvas = Image.new("RGB", (48, 48), BACKGROUND)
    fitted = tiles.fit_thumbnail(photos[0], g.inner)
    canvas.paste(fitted, ((48 - fitted.width) // 2, (48 - fitted.height) // 2))
    want = np.asarray(canvas, dtype=np.float64)
    holder = np.asarray(tiles.placeholder(g.inner), dtype=np.float64)  # 48 px: no pad
    # JPEG q85 of 64 px tiles: about 7 from its own pixels, above 60 from a placeholder.
    assert np.abs(cell - want).mean() < 12
    assert np.abs(cell[32:] - want[32:]).mean() < 12  # the part the second band drew
    assert np.abs(cell[32:] - holder[32:]).mean() > 40
    shard = [c for name, data in one.items() if name.startswith("/cells/")
             for c in _jsonp(data)["cells"]]
    assert ["/photos/000.jpg", "straddler"] in [c[2:4] for c in shard] and len(shard) == 61
