"""The offline demo collection: real photos and digits, every file readable, labels complete."""
import csv
import os

import numpy as np

from gridtsne.decode import DecodeConfig, decode_image
from gridtsne.demo_data import write_demo_images
from gridtsne.listing import expand_pattern


def test_demo_collection(tmp_path):
    labels = write_demo_images(tmp_path / "demo")
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label"]
    digits = [r for r in rows if r["path"].startswith("digits/")]
    photos = [r for r in rows if not r["path"].startswith("digits/")]
    assert len(digits) == 1797 and {r["label"] for r in digits} == {str(d) for d in range(10)}
    assert {"chelsea", "coffee", "astronaut", "china", "flower"} <= {r["label"] for r in photos}
    root = os.path.dirname(labels)
    listed = {os.path.relpath(i.uri, root) for i in expand_pattern(root)}
    assert listed == {r["path"] for r in rows} | {"labels.csv"}
    for r in photos + digits[:20]:
        decoded = decode_image(open(os.path.join(root, r["path"]), "rb").read(), DecodeConfig())
        assert decoded.pixels.shape == (224, 224, 3)
    # A digit is dark ink on a white ground.
    one = decode_image(open(os.path.join(root, digits[0]["path"]), "rb").read(), DecodeConfig())
    assert np.median(one.pixels) > 200 and one.pixels.min() < 60
