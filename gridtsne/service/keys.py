"""API keys: random tokens shown once, stored only as their SHA-256.

A key carries 256 random bits, so a fast hash is enough: there is nothing to brute-force that
a slow password hash would protect (and it keeps every request's check at a microsecond).
"""
import hashlib
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
