"""Run code in a fresh interpreter that imports this checkout, as a launcher or worker does."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, env=None, timeout=120, check=False):
    """``python -c code`` with this checkout first on ``PYTHONPATH`` (then the caller's, or
    ``env``'s); the completed process, its output as text."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout, check=check)
