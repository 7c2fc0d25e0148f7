"""The answers' shape, as in the seed: ``{"output": {"id", "status": {"code", ...}, ...}}``."""
import datetime as _dt
import math

from gridtsne.service import store as S

DESCRIPTIONS = {
    S.PENDING: "queued: waits for a free job slot (or for another job on the same output)",
    S.RUNNING: "running",
    S.SUCCEEDED: "the map is published",
    S.FAILED: "the job failed",
    S.CANCELLED: "cancelled",
}
SUMMARY_KEYS = ("images", "grid", "layout_method", "tiles", "placeholders")


def iso(ts):
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat(timespec="milliseconds")


def finite(value):
    """``value`` with every NaN or infinity (in nested dicts and lists) replaced by None.

    JSON has no NaN: a quality figure that is NaN (labels that match almost nothing) must be
    ``null``, or the answer could not be written at all. Applied to every answer, so jobs
    stored before this rule existed are answered too.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def visualization(job, base_url, links=None, progress=None):
    """One job as the API shows it; ``links`` (finished) and ``progress`` (running) optional."""
    status = {"code": job["status"], "description": DESCRIPTIONS[job["status"]],
              "attempts": job["attempts"]}
    if job["status"] == S.RUNNING:
        status["progress"] = progress  # issue 9's progress document, None until it exists
    if job["status"] == S.FAILED and job.get("error"):
        status["error"] = job["error"]
    elif job.get("error") and job["status"] in (S.PENDING, S.RUNNING):
        status["note"] = job["error"]  # e.g. why it is running again after a restart
    req = job["request"]
    out = {
        "id": job["id"],
        "status": status,
        "created_at": iso(job["created"]),
        "started_at": iso(job["started"]),
        "finished_at": iso(job["finished"]),
        "input": {k: req.get(k) for k in ("inputs", "manifests", "labels", "options")},
        "output_url": job["output"],
        "version": job.get("version_id"),
        "links": {"self": f"{base_url}v2/visualizations/{job['id']}",
                  "log": f"{base_url}v2/visualizations/{job['id']}/log"},
    }
    result = job.get("result")
    if job["status"] == S.SUCCEEDED and result:
        summary = result.get("summary") or {}
        out["data"] = {**(links or {}),
                       "counts": summary.get("counts"),
                       "quality": summary.get("quality"),
                       **{k: summary.get(k) for k in SUMMARY_KEYS}}
    return finite(out)
