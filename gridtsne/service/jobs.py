"""Running visualizations: one ``gridtsne run`` child process per job, queued in order.

A single scheduler thread owns every child: it starts the oldest pending jobs (at most
``max_concurrent_jobs``, never two that write the same output), notices exits and cancels, and
records the outcome in the store. A child that crashes only fails its own job. Children die
with the server (``PR_SET_PDEATHSIG``), and a restarted server runs again whatever was running,
under a new version id, so a half-written version is never mistaken for a finished one.
"""
import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time

from gridtsne import storage, versions
from gridtsne.service import store as S
from gridtsne.service.security import overlaps

log = logging.getLogger(__name__)

POLL_S = 0.5
KILL_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1
_ERROR_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception|Exit)\b.*")


def _child_setup(nice):
    """In the child, before exec: lower priority, and die when the starting thread goes away."""
    if nice:
        os.nice(nice)  # batch work yields the CPU to the API's requests
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the restart's requeue still covers a server crash
        pass


def version_for(job_id, attempt):
    """The version id attempt ``attempt`` of ``job_id`` writes (``[0-9A-Za-z_-]{1,64}``)."""
    return f"{job_id}-{attempt}"


def job_argv(job, version, job_flags, allow_input=()):
    """The ``gridtsne run`` flags of ``job``: the caller's request, then the operator's flags.

    ``allow_input`` (the server's ``--allow_input``) goes to the job too, which checks every
    URL it opens against it: manifest lines, listed files, symlink targets, redirects.
    """
    req = job["request"]
    # Every value joined to its flag (``--input=<url>``): a value that begins with '-' is then
    # never read as a flag of its own.
    argv = [f"--allow_input={prefix}" for prefix in allow_input]
    for url in req.get("inputs") or []:
        argv.append(f"--input={url}")
    for url in req.get("manifests") or []:
        argv.append(f"--manifest={url}")
    if req.get("labels"):
        argv.append(f"--labels={req['labels']}")
    argv += [f"--output={job['output']}", f"--version_id={version}"]
    # The job's log (GET .../log) is for diagnosis: Beam's and the stages' INFO lines, and
    # progress as plain lines (the child's output is a file, never a terminal).
    argv += ["--verbose", "--progress", "lines"]
    argv += req.get("flags") or []
    return argv + list(job_flags)


def job_command(python, argv):
    """The child's command line: the installed gridtsne's ``run``, whatever the working folder.

    ``-P`` keeps the working folder off ``sys.path``, so a ``gridtsne/`` or ``pipelines/``
    folder there is never what runs (``PYTHONPATH`` still applies, as the operator set it).
    """
    return [python, "-P", "-m", "gridtsne.cli", "run", *argv]


_MODELS = {}
_MODELS_LOCK = threading.Lock()


def models_known():
    """True once :func:`registered_models` has asked the registry."""
    return bool(_MODELS)


def registered_models(python):
    """The model names the jobs' gridtsne registers, asked once of a child ``python``; None
    when that child fails (logged; the job then reports the problem itself).

    A child, because the registry lives beside torch, which the server itself never imports
    (it would cost the server hundreds of MB and seconds of start-up).
    """
    with _MODELS_LOCK:
        if python not in _MODELS:
            names = None
            try:
                out = subprocess.run(
                    [python, "-P", "-c", "import json; from gridtsne.models import "
                     "model_names; print(json.dumps(model_names()))"],
                    capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
                if out.returncode == 0:
                    names = tuple(json.loads(out.stdout.strip().splitlines()[-1]))
                else:
                    log.warning("could not list gridtsne's models: %s", out.stderr[-500:])
            except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as err:
                log.warning("could not list gridtsne's models: %s", err)
            _MODELS[python] = names
        return _MODELS[python]


def open_private(path, mode="a"):
    """``open(path, mode)`` of a file created readable by its owner only (0600)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, 0o600), mode, buffering=1, encoding="utf-8")


def log_path(config, job_id):
    return os.path.join(config.log_dir, f"{job_id}.log")


def read_log(config, job_id, tail=None):
    """The job's log as text (its last ``tail`` bytes when given), '' before it started."""
    try:
        with open(log_path(config, job_id), "rb") as fh:
            if tail:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - tail))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def error_from_log(text, code):
    """A readable one-line reason for a failed child: its last exception line, else the tail."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line[:1000]
    tail = " | ".join(lines[-3:])[:1000]
    return f"gridtsne run exited with status {code}" + (f": {tail}" if tail else "")


def read_progress(output, version, storage_options=None):
    """The run's progress document (issue 9's contract), or None where there is none yet."""
    if not version:
        return None
    try:
        return json.loads(storage.read_bytes(versions.progress_url(output, version),
                                             storage_options))
    except Exception:  # absent, half-written or unreadable: progress is optional
        return None


def published_result(output, version, storage_options=None):
    """``{"version", "summary"}`` when ``latest.json`` points at ``version``, else None."""
    pointer = versions.read_pointer(output, storage_options)
    if pointer is None or pointer.get("version") != version:
        return None
    return {"version": version, "summary": pointer.get("summary") or {}}


def discard_version(output, version, storage_options=None):
    """Remove a cancelled run's unpublished ``versions/<version>/`` (best effort)."""
    pointer = versions.read_pointer(output, storage_options)
    if pointer is not None and pointer.get("version") == version:
        return  # it got published before the kill landed: never delete the current map
    try:
        fs, path = storage.filesystem(versions.version_url(output, version), storage_options)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except Exception as err:  # pruning by a later run removes it anyway
        log.warning("could not remove cancelled version %s of %s: %s", version, output, err)


def _kill_group(proc):
    """SIGTERM the child's process group, SIGKILL it after a grace period; waits for it."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


class JobRunner:
    """The scheduler thread; :meth:`wake` it after a job was created or cancelled."""

    def __init__(self, config, store):
        self.config = config
        self.store = store
        self._running = {}  # job id -> (Popen, job row, version, log file)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gridtsne-jobs", daemon=True)

    def start(self):
        os.makedirs(self.config.log_dir, mode=0o700, exist_ok=True)
        for job in self.store.jobs_with_status(S.RUNNING):
            # Its child died with the previous server (PR_SET_PDEATHSIG): run it again.
            self.store.requeue(job["id"], "the server stopped while this job ran; it runs again")
            log.info("job %s was running when the server stopped: queued again", job["id"])
        self._thread.start()

    def wake(self):
        self._wake.set()

    def stop(self):
        """Stop scheduling and kill the running children (their jobs run again on restart)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def running_pids(self):
        return {job_id: entry[0].pid for job_id, entry in list(self._running.items())}

    def _loop(self):
        while not self._stop.is_set():
            try:
                self._reap()
                self._launch()
            except Exception:  # a store hiccup must not end scheduling for good
                log.exception("job scheduler step failed")
            self._wake.wait(POLL_S)
            self._wake.clear()
        for job_id, (proc, job, version, fh) in list(self._running.items()):
            _kill_group(proc)
            fh.close()
            self.store.requeue(job_id, "the server stopped while this job ran; it runs again")

    def _reap(self):
        for job_id, (proc, job, version, fh) in list(self._running.items()):
            current = self.store.get_job(job_id)
            cancelled = current is None or current["status"] == S.CANCELLED
            if proc.poll() is None and not cancelled:
                continue
            if cancelled:
                _kill_group(proc)
            del self._running[job_id]
            fh.write(f"\n[gridtsne serve] child exited with status {proc.returncode}\n")
            fh.close()
            if cancelled:
                discard_version(job["output"], version, self.config.storage_options)
                log.info("job %s cancelled; its child %s is gone", job_id, proc.pid)
                continue
            self._record_exit(job, version, proc.returncode)

    def _record_exit(self, job, version, code):
        result = None
        try:
            result = published_result(job["output"], version, self.config.storage_options) if code == 0 else None
        except Exception as err:
            error = f"the run ended but its pointer could not be read: {err}"
        else:
            error = None if result else (
                error_from_log(read_log(self.config, job["id"], tail=64 * 1024), code)
                if code != 0 else "gridtsne run exited 0 but did not publish its version")
        status = S.SUCCEEDED if result else S.FAILED
        self.store.finish(job["id"], status, error=error, result=result)
        log.info("job %s %s (exit %s)", job["id"], status, code)

    def _launch(self):
        limit = self.config.max_concurrent_jobs
        if len(self._running) >= limit:
            return
        busy = [entry[1]["output"] for entry in self._running.values()]
        for job in self.store.jobs_with_status(S.PENDING):
            if len(self._running) >= limit:
                return
            if any(overlaps(job["output"], other) for other in busy):
                # Same output as a running job (or one inside or above it, from before the
                # submission check refused those): it runs once that one ends.
                continue
            busy.append(job["output"])
            self._start(job)

    def _start(self, job):
        version = version_for(job["id"], job["attempts"] + 1)
        argv = job_argv(job, version, self.config.job_flags, self.config.allow_input)
        cmd = job_command(self.config.python, argv)
        fh = open_private(log_path(self.config, job["id"]))
        fh.write(f"[gridtsne serve] {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                 f"attempt {job['attempts'] + 1}, version {version}\n")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.config.workdir, env=env,
                                    start_new_session=True,
                                    preexec_fn=lambda: _child_setup(self.config.job_nice))
        except OSError as err:
            fh.close()
            self.store.mark_running(job["id"], None, version)
            self.store.finish(job["id"], S.FAILED, error=f"could not start the job: {err}")
            return
        if not self.store.mark_running(job["id"], proc.pid, version):
            _kill_group(proc)  # cancelled between the queue read and the start
            fh.close()
            return
        self._running[job["id"]] = (proc, job, version, fh)
        log.info("job %s started: pid %s, version %s", job["id"], proc.pid, version)
