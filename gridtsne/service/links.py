"""URLs a browser can open for a finished map.

Under a local ``--output_root`` the server itself serves each finished version's ``site/``
folder read-only at ``/maps/<share token>/`` (the token is 256 random bits, so the path is the
capability, as with a signed URL). Under ``s3://`` or ``gs://`` each link is a URL signed by
the object store's own client (botocore through s3fs, or gcsfs) that expires after
``--signed_url_expiry`` seconds.
"""
import os
import time

from gridtsne import storage, versions

SITE_DIR = "site"
FILES = {"image": "mosaic.jpg", "tsne": "tsne.jpg", "page": "index.html", "dzi": "mosaic.dzi"}
SIGNED_SCHEMES = ("s3", "s3a", "gs", "gcs")
SHARE_PREFIX = "/maps"


def is_local(url):
    return "://" not in url or url.startswith("file://")


def local_path(url):
    return url[len("file://"):] if url.startswith("file://") else url


def site_url(output, version):
    return storage.url_join(versions.version_url(output, version), SITE_DIR)


def map_links(output, version, share_token, base_url, expiry_s, storage_options=None):
    """``{name: {"url": ...}}`` for :data:`FILES`, plus ``expires_at`` on signed URLs."""
    site = site_url(output, version)
    if is_local(output):
        base = f"{base_url.rstrip('/')}{SHARE_PREFIX}/{share_token}/"
        return {name: {"url": base + f} for name, f in FILES.items()}
    scheme = output.split("://", 1)[0].lower()
    if scheme not in SIGNED_SCHEMES:
        return {name: {"url": storage.url_join(site, f)} for name, f in FILES.items()}
    fs, _ = storage.filesystem(site, storage_options)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + expiry_s))
    links = {}
    for name, f in FILES.items():
        _, path = storage.filesystem(storage.url_join(site, f), storage_options)
        links[name] = {"url": fs.sign(path, expiration=expiry_s), "expires_at": expires}
    return links


def shared_file(output, version, relative):
    """The local file ``relative`` inside a finished version's ``site/``, or None.

    Refuses anything that would leave the folder (``..``, absolute paths, symlinks out).
    """
    if "\x00" in (relative or ""):
        return None  # no file has one in its name; os.path would raise on it
    root = os.path.realpath(local_path(site_url(output, version)))
    target = os.path.realpath(os.path.join(root, relative or "index.html"))
    if os.path.commonpath([root, target]) != root or not os.path.isfile(target):
        return None
    return target
