"""API keys and share tokens: random or keyed tokens, stored only as their SHA-256.

A key carries 256 random bits, so a fast hash is enough: there is nothing to brute-force that
a slow password hash would protect (and it keeps every request's check at a microsecond).
A map's share token is an HMAC of its job id under the server's secret (a 0600 file beside the
database), so the server can show the link again while the database holds only its hash.
"""
import base64
import hashlib
import hmac
import os
import re
import secrets

PREFIX = "gtk_"
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def new_key():
    """A fresh API key such as ``gtk_2b7Q...`` (43 URL-safe characters after the prefix)."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key):
    """The hex SHA-256 the store keeps instead of ``key``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_name(name):
    """``name`` if it is a usable key name, else ValueError quoting it."""
    if not _NAME.fullmatch(name or ""):
        raise ValueError(f"a key name is 1-64 letters, digits or _.@-, got {name!r}")
    return name


def key_from_header(value):
    """The key in an ``Authorization: Key <key>`` (or ``Bearer <key>``) header, or None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() not in ("key", "bearer") or not token.strip():
        return None
    return token.strip()


def share_token(secret, job_id):
    """The share token of ``job_id``: 256 bits of HMAC-SHA256 under ``secret``, URL-safe."""
    digest = hmac.new(secret, job_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def private_file(path, data=None):
    """Create ``path`` readable and writable by its owner only (0600), with ``data`` if given;
    an existing file is narrowed to 0600. Returns True when it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return False
    with os.fdopen(fd, "wb") as fh:
        if data:
            fh.write(data)
    return True


def load_secret(path):
    """The server's secret (32 random bytes) from ``path``, created 0600 on first use."""
    private_file(path, secrets.token_bytes(32))
    with open(path, "rb") as fh:
        secret = fh.read()
    if len(secret) < 32:
        raise ValueError(f"{path}: the server secret must hold at least 32 bytes, it holds "
                         f"{len(secret)}")
    return secret
