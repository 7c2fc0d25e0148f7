#!/usr/bin/env python3
"""Everyday commands that need nothing but Python 3.11 and pip.

    python3 dev.py demo    # run the whole job on the embedded offline photos
    python3 dev.py test    # run the test suite (what .ci/run calls)
    python3 dev.py venv    # only create/refresh .venv

Each command creates ``.venv`` (pinned by ``constraints.txt``) when it is missing or stale.
"""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".gridtsne-installed"


def _sh(*cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=kw.pop("cwd", ROOT), **kw)


def _inputs_digest():
    h = hashlib.sha256()
    for name in ("setup.py", "constraints.txt"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def venv():
    """Create .venv and install the package with its test extra, pinned by constraints.txt."""
    digest = _inputs_digest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PY.exists():
        _sh(sys.executable, "-m", "venv", VENV)
    _sh(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _sh(PY, "-m", "pip", "install", "--quiet", "-c", "constraints.txt", "-e", ".[test,demo]")
    STAMP.write_text(digest)


def browser_deps():
    """Debian's Chromium for the browser test, when CI runs as root (OpenSeadragon ships in
    the package, so nothing comes from npm)."""
    wants_browser = os.environ.get("CI") == "true"
    if wants_browser and not shutil.which("chromium") and shutil.which("apt-get") \
            and os.geteuid() == 0:
        _sh("apt-get", "update", "-qq")
        _sh("apt-get", "install", "-y", "-qq", "chromium")


def demo(args):
    venv()
    _sh(PY, "-m", "gridtsne.cli", "demo", *args)


def test(args):
    venv()
    browser_deps()
    env = dict(os.environ)
    if env.get("CI") == "true":
        # In CI a missing browser or server is a failure, not a skip.
        env.setdefault("GRIDTSNE_REQUIRE_ALL", "1")
    result = subprocess.run([str(PY), "-m", "pytest", *(args or ["-q"])], cwd=ROOT, env=env)
    sys.exit(result.returncode)


def main(argv):
    commands = {"venv": lambda a: venv(), "demo": demo, "test": test}
    if not argv or argv[0] not in commands:
        print(__doc__)
        sys.exit(2)
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
