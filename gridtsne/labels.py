"""Reading a labels CSV (``path,label`` or ``uri,label``), shared by the page and the metrics.

A labels file given as a local path is read once, on the launching machine
(:func:`labels_csv`), and travels with the job: Dataflow and Flink workers cannot see the
launcher's disk. One given as a URL is read where it is used.
"""
import csv
import dataclasses
import io
import os

from gridtsne import storage

# A local labels file travels inside the job graph; Dataflow refuses graphs of 10 MB and more.
MAX_LOCAL_LABELS_BYTES = 8 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class LabelsCsv:
    """A labels CSV: its URL (or absolute local path), and its bytes when read at launch.

    ``url`` keeps its meaning either way: relative ``path`` entries are taken relative to
    its folder.
    """

    url: str
    data: bytes = dataclasses.field(default=None, repr=False)

    def read(self, storage_options=None):
        if self.data is not None:
            return self.data
        return storage.read_bytes(self.url, storage_options)

    def __str__(self):
        return self.url


def _is_local(source):
    return "://" not in source or source.startswith("file://")


def labels_csv(source):
    """``source`` (a path, URL or :class:`LabelsCsv`) as a :class:`LabelsCsv`; None stays None.

    Call it on the launcher: a local file is read now, so no worker needs to see it.

    Raises
    ------
    ValueError
        When a local file is missing, or too large to travel with the job (then it must be
        given as a URL the workers can read, e.g. next to the photos in the bucket).
    """
    if source is None or isinstance(source, LabelsCsv):
        return source
    source = str(source)
    if not _is_local(source):
        return LabelsCsv(source)
    path = os.path.abspath(os.path.expanduser(source.removeprefix("file://")))
    if not os.path.isfile(path):
        raise ValueError(f"--labels file does not exist: {source!r}")
    size = os.path.getsize(path)
    if size > MAX_LOCAL_LABELS_BYTES:
        raise ValueError(f"--labels {source!r} is a local file of {size:,} bytes, more than "
                         f"{MAX_LOCAL_LABELS_BYTES:,} can travel with the job: copy it to "
                         f"storage the workers can read (s3://, gs:// ...) and give that URL")
    with open(path, "rb") as fh:
        return LabelsCsv(path, fh.read())


def read_label_rows(source, storage_options=None):
    """``(key, rows)``: the key column (``"uri"`` or ``"path"``) and ``(key value, label)``
    pairs of the rows that name an image, in file order.

    ``source`` is a URL or a :class:`LabelsCsv`.

    Raises
    ------
    ValueError
        When the header lacks ``label`` or both ``uri`` and ``path``.
    """
    source = source if isinstance(source, LabelsCsv) else LabelsCsv(str(source))
    text = source.read(storage_options).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    key = "uri" if "uri" in header else "path" if "path" in header else None
    if key is None or "label" not in header:
        raise ValueError(f"labels CSV {source.url!r} needs columns 'label' and 'uri' or "
                         f"'path', got {header!r}")
    return key, [(row[key].strip(), row["label"]) for row in reader if row.get(key)]
