"""A real ``gridtsne serve`` process on 127.0.0.1 for the service tests and benchmarks."""
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny real jobs: the tiny CNN of tests/tiny_model.py and a short t-SNE.
FAST_OPTIONS = {"model": "tests.tiny_model:TINY", "batch_size": 16, "n_iter": 60,
                "early_exaggeration_iter": 30, "perplexity": 5, "cell": 32, "tile": 128}
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args):
    # -P: the working folder is not on sys.path, as for the installed `gridtsne` script.
    return [sys.executable, "-P", "-m", "gridtsne.cli", "serve", *args]


def _env():
    """The tests' environment plus this checkout on PYTHONPATH: the server and its jobs import
    this gridtsne and tests.tiny_model from any working folder."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": REPO + (os.pathsep + path if path else "")}


class Server:
    """``gridtsne serve --database <folder>/jobs.db FLAGS`` started and stopped by a test."""

    def __init__(self, folder, *flags, cwd=REPO):
        self.cwd = str(cwd)
        self.folder = str(folder)
        os.makedirs(self.folder, exist_ok=True)
        self.database = os.path.join(self.folder, "jobs.db")
        self.flags = [str(f) for f in flags]
        self.proc = None
        self.url = None
        self._log = None

    def create_key(self, name):
        out = subprocess.run(_cli("--database", self.database, "--create_key", name),
                             cwd=self.cwd, env=_env(), check=True, capture_output=True,
                             text=True)
        return out.stdout.strip()

    def start(self, timeout=60):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(os.path.join(self.folder, "server.log"), "ab")
        self.proc = subprocess.Popen(
            _cli("--database", self.database, "--host", "127.0.0.1", "--port", str(port),
                 "--log_level", "warning", *self.flags),
            cwd=self.cwd, env=_env(), stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gridtsne serve exited with {self.proc.returncode}: "
                                   f"{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"gridtsne serve did not answer in {timeout} s: {self.log()}")

    def log(self):
        with open(os.path.join(self.folder, "server.log"), "rb") as fh:
            return fh.read().decode("utf-8", "replace")[-4000:]

    def client(self, key=None, **kwargs):
        headers = {"Authorization": f"Key {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def stop(self, sig=signal.SIGTERM):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def wait_for(client, job_id, codes, timeout=240):
    """Poll ``GET /v2/visualizations/<id>`` until its status is one of ``codes``."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/v2/visualizations/{job_id}")
        if answer.status_code == 429 and time.monotonic() < deadline:
            # A slow job (a loaded machine) polled past the per-key rate: wait as told.
            time.sleep(min(float(answer.headers.get("retry-after", 1)), 5))
            continue
        answer.raise_for_status()
        output = answer.json()["output"]
        if output["status"]["code"] in codes:
            return output
        if output["status"]["code"] in TERMINAL or time.monotonic() > deadline:
            log = client.get(f"/v2/visualizations/{job_id}/log").text[-3000:]
            raise AssertionError(f"{job_id} is {output['status']}, waited for {codes}:\n{log}")
        time.sleep(0.5)
