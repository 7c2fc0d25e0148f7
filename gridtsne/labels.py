"""Reading a labels CSV (``path,label`` or ``uri,label``), shared by the page and the metrics."""
import csv
import io

from gridtsne import storage


def read_label_rows(url):
    """``(key, rows)``: the key column (``"uri"`` or ``"path"``) and ``(key value, label)``
    pairs of the rows that name an image, in file order.

    Raises
    ------
    ValueError
        When the header lacks ``label`` or both ``uri`` and ``path``.
    """
    text = storage.read_bytes(url).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    key = "uri" if "uri" in header else "path" if "path" in header else None
    if key is None or "label" not in header:
        raise ValueError(f"labels CSV {url!r} needs columns 'label' and 'uri' or 'path', "
                         f"got {header!r}")
    return key, [(row[key].strip(), row["label"]) for row in reader if row.get(key)]
