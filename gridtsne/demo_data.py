"""The offline demo collection: real photos that ship inside scikit-image and scikit-learn.

``write_demo_images(folder)`` writes scikit-image's sample photos, scikit-learn's two sample
images and scikit-learn's 1,797 handwritten digits (upscaled from 8 x 8) into ``folder``,
with a ``labels.csv`` (``path,label``, paths relative to the folder) like the shared data sets
have, so the demo needs no download and its layout can be scored by label.
"""
import csv
import logging
import os
import shutil

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
DIGIT_SIZE = 64
_PHOTO_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff")


def _pillow_reads(path):
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception as exc:  # e.g. skimage's multipage_rgb.tif needs imagecodecs
        log.debug("leaving %s out of the demo: %s", path, exc)
        return False


def _skimage_photos():
    import skimage

    folder = os.path.join(os.path.dirname(skimage.__file__), "data")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(_PHOTO_EXTENSIONS)
                  and _pillow_reads(os.path.join(folder, f)))


def _sklearn_photos():
    from sklearn.datasets import load_sample_images

    return sorted(load_sample_images().filenames)


def offline_photos():
    """Paths of the real photographs scikit-image and scikit-learn ship (no download)."""
    return _skimage_photos() + _sklearn_photos()


def digit_image(pixels, size=DIGIT_SIZE):
    """An 8 x 8 digit (values 0..16, 16 = ink) as a ``size`` px greyscale image, dark on white."""
    grey = (255 - np.asarray(pixels, np.float64) * (255 / 16)).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").resize((size, size), Image.Resampling.BICUBIC)


def write_demo_images(folder, digit_size=DIGIT_SIZE):
    """Write the demo collection into ``folder`` (created if needed).

    Parameters
    ----------
    folder : str or path
        A local directory. Existing files of the same names are replaced.
    digit_size : int
        Side of the upscaled digit images.

    Returns
    -------
    str
        Path of ``labels.csv`` (columns ``path,label``; a photo's label is its sample name, a
        digit's label is the digit).
    """
    from sklearn.datasets import load_digits

    folder = os.path.abspath(str(folder))
    rows = []
    for source, files in (("skimage", _skimage_photos()), ("sklearn", _sklearn_photos())):
        os.makedirs(os.path.join(folder, source), exist_ok=True)
        for path in files:
            name = os.path.basename(path)
            rel = f"{source}/{name}"
            shutil.copyfile(path, os.path.join(folder, rel))
            rows.append((rel, os.path.splitext(name)[0]))
    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        rel = f"digits/{label}/{i:04d}.png"
        os.makedirs(os.path.join(folder, "digits", str(label)), exist_ok=True)
        digit_image(pixels, digit_size).save(os.path.join(folder, rel))
        rows.append((rel, str(label)))
    labels = os.path.join(folder, LABELS_FILE)
    with open(labels, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    log.info("wrote %d demo images into %s", len(rows), folder)
    return labels
