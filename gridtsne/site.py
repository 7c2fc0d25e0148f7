"""The web page next to the pyramid and the lazily loaded indexes it reads.

The page itself (``gridtsne/web/``) is static; this module fills in its configuration and
writes the two indexes it loads on demand, so a page for a million images opens at once:

* ``cells/<br>_<bc>.js``: the images of one block of ``CELL_BLOCK`` x ``CELL_BLOCK`` cells
  (URI, label, original size), loaded when the pointer first reaches that block;
* ``search/index.js`` + ``search/<chunk>.js``: every image's file name, sorted and cut into
  chunks, with a small directory of chunk ranges, so a search loads one or two chunks.

Index files are JavaScript that hands its JSON to ``gridtsneData(name, data)`` ("JSONP"):
script tags load from ``file://`` and from a bucket without any CORS setup, where ``fetch``
of a JSON file would be refused.
"""
import dataclasses
import functools
import html
import importlib.resources
import json
import logging
import os
import posixpath
import re

from gridtsne import storage
from gridtsne.labels import read_label_rows

log = logging.getLogger(__name__)

CELL_BLOCK = 32
SEARCH_CHUNK = 2000
# Names are grouped by their first characters before sorting; each group is sorted on its own.
SEARCH_PREFIX = 2
CELLS_DIR = "cells"
SEARCH_DIR = "search"
SEARCH_DIRECTORY = "search/index.js"
SUMMARY_FILE = "site.json"
INDEX_FILE = "index.html"
# Files of gridtsne/web/ copied next to index.html unchanged.
STATIC_FILES = ("gridtsne.js", "gridtsne.css")

# OpenSeadragon ships inside the package (gridtsne/web/openseadragon/: the npm package's
# minified build, its button images and its BSD-3-Clause licence), and is copied next to every
# page, so a map opens offline and asks no third party for anything.
OSD_VERSION = "6.1.1"
DEFAULT_OSD_URL = str(importlib.resources.files("gridtsne").joinpath(
    "web", "openseadragon", "openseadragon.min.js"))
OSD_LICENSE_NAMES = ("LICENSE.txt", "LICENSE")

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def uri_key(uri):
    """The form of a URI used to match labels to images: ``file://`` dropped, path normalised."""
    uri = str(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if not _SCHEME.match(uri):
        uri = posixpath.normpath(uri)
    return uri


def read_labels(url, storage_options=None):
    """``(uri, label)`` pairs from a CSV with a ``label`` column and a ``uri`` or ``path`` column.

    ``url`` is a URL or a :class:`~gridtsne.labels.LabelsCsv` (a local file read at launch).

    A ``path`` that is relative is taken relative to the CSV's own folder, as in the
    ``labels.csv`` files that sit at the top of a photo set (``test/cat/0001.jpg,cat``).

    Raises
    ------
    ValueError
        When the header lacks ``label`` or both ``uri`` and ``path``.
    """
    key, rows = read_label_rows(url, storage_options)
    base = posixpath.dirname(str(url))  # LabelsCsv's str() is its url
    for where, label in rows:
        if key == "path" and not _SCHEME.match(where) and not where.startswith("/"):
            where = storage.url_join(base, where)
        yield uri_key(where), label


def cell_block(row, col, block=CELL_BLOCK):
    return row // block, col // block


def cell_shard_name(br, bc):
    return f"{CELLS_DIR}/{br}_{bc}"


def jsonp(name, data):
    """A script that hands ``data`` to the page: ``gridtsneData("<name>", {...});``."""
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    # "</" would end an inline script; escaping it keeps the JSON identical once parsed.
    body = body.replace("</", "<\\/")
    return f'gridtsneData({json.dumps(name)},{body});\n'.encode()


def cell_shard(br, bc, entries, block=CELL_BLOCK):
    """``(file name, bytes)`` of the cell index of block ``(br, bc)``.

    ``entries`` are ``(row, col, uri, label, width, height, nbytes)``; label and sizes may be
    None.
    """
    rows = sorted(entries, key=lambda e: (e[0], e[1]))
    for e in rows:
        if cell_block(e[0], e[1], block) != (br, bc):
            raise ValueError(f"cell {(e[0], e[1])!r} of {e[2]!r} is not in block {(br, bc)!r}")
    name = cell_shard_name(br, bc)
    data = {"block": [br, bc], "size": block, "cells": [list(e) for e in rows]}
    return f"{name}.js", jsonp(name, data)


def search_key(uri):
    """What the search box matches: the file name, lower case."""
    return posixpath.basename(str(uri).rstrip("/")).lower()


def search_prefix(uri):
    return search_key(uri)[:SEARCH_PREFIX]


def search_chunks(prefix, entries, chunk=SEARCH_CHUNK):
    """Sorted chunks of the search index for one prefix group.

    ``entries`` are ``(uri, row, col)``. Returns ``[(file name, bytes, directory entry)]``, the
    directory entry being ``[first key, last key, name, count]``.
    """
    rows = sorted((search_key(uri), uri, row, col) for uri, row, col in entries)
    tag = prefix.encode("utf-8").hex() or "empty"
    out = []
    for i in range(0, len(rows), chunk):
        part = rows[i:i + chunk]
        name = f"{SEARCH_DIR}/{tag}-{i // chunk}"
        out.append((f"{name}.js", jsonp(name, {"entries": [list(r) for r in part]}),
                    [part[0][0], part[-1][0], name, len(part)]))
    return out


def search_directory(entries):
    """``search/index.js``: every chunk's key range, sorted, so the page can binary-search."""
    chunks = sorted(entries, key=lambda e: (e[0], e[1], e[2]))
    return jsonp(SEARCH_DIRECTORY[:-3], {"chunks": chunks})


def _web_file(name):
    return importlib.resources.files("gridtsne").joinpath("web", name).read_bytes()


@dataclasses.dataclass(frozen=True)
class PageConfig:
    """What ``index.html`` needs to know, written into the page itself."""

    title: str
    rows: int
    cols: int
    cell: int
    tile: int
    ext: str
    width: int
    height: int
    images: int
    osd_url: str = DEFAULT_OSD_URL
    cell_block: int = CELL_BLOCK
    labels: bool = False
    overviews: tuple = ("mosaic.jpg", "tsne.jpg")
    projector: bool = False

    def to_json(self):
        return {
            "title": self.title, "rows": self.rows, "cols": self.cols, "cell": self.cell,
            "cellBlock": self.cell_block, "images": self.images, "labels": self.labels,
            "overviews": list(self.overviews), "projector": self.projector,
            "search": SEARCH_DIRECTORY,
            # An inline tile source: no XHR for mosaic.dzi, so the page also works from file://.
            "tileSource": {"Image": {
                "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                "Url": "mosaic_files/", "Format": self.ext, "Overlap": "0",
                "TileSize": str(self.tile),
                "Size": {"Width": str(self.width), "Height": str(self.height)}}},
        }


def page_title(config):
    """The browser tab's title: the collection and how many images its map holds."""
    noun = "image" if config.images == 1 else "images"
    return f"{config.title} · {config.images:,} {noun}"


def collection_title(inputs):
    """A name for a collection from its ``--input`` patterns or manifests: the last folder
    before any glob of the first one (``s3://photos/2024/**`` -> ``2024``), or None."""
    for url in inputs or ():
        path = re.split(r"[*?\[]", str(url), maxsplit=1)[0]
        path = path.split("://", 1)[-1].rstrip("/")
        if not re.search(r"[*?\[]", str(url)) and "." in posixpath.basename(path):
            path = posixpath.dirname(path)  # a single file or a manifest: its folder
        name = posixpath.basename(path.rstrip("/"))
        if name:
            return name
    return None


def index_html(config):
    """``index.html`` with ``config`` (a :class:`PageConfig`) filled in."""
    template = _web_file("index.html").decode("utf-8")
    config_json = json.dumps(config.to_json(), ensure_ascii=False, sort_keys=True)
    config_json = config_json.replace("</", "<\\/")
    page = (template.replace("{{PAGE_TITLE}}", html.escape(page_title(config)))
            .replace("{{TITLE}}", html.escape(config.title))
            .replace("{{OSD_URL}}", html.escape(config.osd_url, quote=True))
            .replace("{{CONFIG_JSON}}", config_json))
    return page.encode("utf-8")


def write_page(output, config, storage_options=None):
    """Write ``index.html`` and its script and style sheet under ``output``."""
    for name in STATIC_FILES:
        storage.write_bytes(storage.url_join(output, name), _web_file(name), storage_options)
    storage.write_bytes(storage.url_join(output, INDEX_FILE), index_html(config),
                        storage_options)


def is_url(text):
    """True for ``scheme://...`` and protocol-relative ``//host/...`` addresses."""
    return bool(_SCHEME.match(str(text))) or str(text).startswith("//")


def read_osd_files(osd_path):
    """A local OpenSeadragon build (the packaged one, or a user's) as ``((relative name,
    bytes), ...)``: the script first, then its licence file when one sits beside it, then its
    ``images/`` folder (the navigation buttons).

    Called on the launcher, so that workers, which cannot see its disk, get the bytes.
    """
    path = str(osd_path)
    if path.startswith("file://"):
        path = path[len("file://"):]
    if os.path.realpath(path) == os.path.realpath(DEFAULT_OSD_URL):
        return packaged_osd_files()
    return _read_osd_files(path, osd_path)


class PackagedOsdFiles(tuple):
    """:func:`read_osd_files` of the copy that ships in gridtsne: pickled as a reference, which
    a worker (it has the package) reads again, not as 0.5 MB of bytes in every transform that
    holds a render configuration."""

    def __reduce__(self):
        return packaged_osd_files, ()


@functools.lru_cache(maxsize=1)
def packaged_osd_files():
    return PackagedOsdFiles(_read_osd_files(DEFAULT_OSD_URL, DEFAULT_OSD_URL))


def _read_osd_files(path, osd_path):
    if not os.path.isfile(path):
        raise ValueError(f"--osd_url must be a URL or an existing local file, got {osd_path!r}")
    files = [(os.path.basename(path), path)]
    folder = os.path.dirname(path)
    files += [(name, os.path.join(folder, name)) for name in OSD_LICENSE_NAMES
              if os.path.isfile(os.path.join(folder, name))]
    images = os.path.join(os.path.dirname(path), "images")
    if os.path.isdir(images):
        files += [(f"images/{entry}", os.path.join(images, entry))
                  for entry in sorted(os.listdir(images))
                  if os.path.isfile(os.path.join(images, entry))]
    out = []
    for name, full in files:
        with open(full, "rb") as fh:
            out.append((name, fh.read()))
    return tuple(out)


def write_osd_files(files, output, storage_options=None):
    """Write :func:`read_osd_files`'s files into ``<output>/openseadragon/``, so the site works
    offline and from a bucket alike; returns the page's relative ``<script src>``."""
    for name, data in files:
        storage.write_bytes(storage.url_join(output, "openseadragon", name), data,
                            storage_options)
    return f"openseadragon/{files[0][0]}"
