"""The SQLite database of jobs and API-key hashes: what a restarted server picks up again.

The file is created readable by its owner only (0600; SQLite gives its WAL the same mode), and
it holds no secret in clear: keys and share tokens are there as their SHA-256 only.
One connection shared by the server's threads behind a lock, in WAL mode. Every state change
is a conditional UPDATE (``... WHERE status = 'RUNNING'``), so a cancel racing a job's end or
its start resolves to exactly one outcome.
"""
import json
import sqlite3
import threading
import time

PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
ACTIVE = (PENDING, RUNNING)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    key_id INTEGER NOT NULL REFERENCES keys(id),
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    output TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT NOT NULL,
    share_hash TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    version_id TEXT,
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    UNIQUE (key_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (key_id, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_by_share ON jobs (share_hash);
CREATE INDEX IF NOT EXISTS jobs_by_output ON jobs (output);
"""


class LimitExceeded(Exception):
    """The key already has its maximum of pending and running jobs."""


class IdempotencyConflict(Exception):
    """The same Idempotency-Key was sent before with a different body."""


def _row(cursor, row):
    d = {col[0]: value for col, value in zip(cursor.description, row)}
    for name in ("request", "result"):
        if d.get(name) is not None:
            d[name] = json.loads(d[name])
    return d


class Store:
    """Jobs and keys in one SQLite file."""

    def __init__(self, path, share_hash=None):
        """Open (or create) the database at ``path``.

        ``share_hash(job_id)`` gives a job's share-token hash; a database from before tokens
        were hashed has its clear ``share_token`` column replaced by it.
        """
        self.path = path
        if path != ":memory:":
            from gridtsne.service.keys import private_file

            private_file(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._db.row_factory = _row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a crash of the server (not of the machine)
            # without an fsync per request.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(share_hash)
            self._db.executescript(_SCHEMA)

    def _migrate(self, share_hash):
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(jobs)").fetchall()}
        if "share_token" not in columns:
            return
        from gridtsne.service.keys import hash_key

        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DROP INDEX IF EXISTS jobs_by_token")
        self._db.execute("ALTER TABLE jobs RENAME COLUMN share_token TO share_hash")
        for row in self._db.execute("SELECT id, share_hash FROM jobs").fetchall():
            new = share_hash(row["id"]) if share_hash else hash_key(row["share_hash"])
            self._db.execute("UPDATE jobs SET share_hash = ? WHERE id = ?", (new, row["id"]))
        self._db.execute("COMMIT")

    def close(self):
        with self._lock:
            self._db.close()

    def _one(self, sql, args=()):
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql, args=()):
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _change(self, sql, args=()):
        """Run one UPDATE; True when it changed a row."""
        with self._lock:
            return self._db.execute(sql, args).rowcount > 0

    # keys ---------------------------------------------------------------------------------
    def add_key(self, name, key_hash):
        with self._lock:
            try:
                self._db.execute("INSERT INTO keys (name, hash, created) VALUES (?, ?, ?)",
                                 (name, key_hash, time.time()))
            except sqlite3.IntegrityError:
                raise ValueError(f"a key named {name!r} already exists") from None

    def key_by_hash(self, key_hash):
        return self._one("SELECT id, name FROM keys WHERE hash = ? AND revoked = 0",
                         (key_hash,))

    def revoke_key(self, name):
        return self._change("UPDATE keys SET revoked = 1 WHERE name = ? AND revoked = 0",
                            (name,))

    def list_keys(self):
        return self._all("SELECT id, name, created, revoked FROM keys ORDER BY id")

    # jobs ---------------------------------------------------------------------------------
    def create_job(self, job, max_active=0, check_output=None):
        """Insert ``job`` (a dict of column values) unless refused; returns ``(row, created)``.

        With the same ``(key_id, idempotency_key)`` as an earlier job, returns that job and
        False (IdempotencyConflict when its body differed). Raises LimitExceeded when the key
        already has ``max_active`` (> 0) pending or running jobs. ``check_output``, when given,
        is called with :meth:`overlapping_outputs` of the job's output and raises to refuse
        it. Checks and insert are one transaction, so concurrent requests cannot both slip
        under the limit, nor both claim overlapping outputs.
        """
        cols = ", ".join(job)
        marks = ", ".join("?" for _ in job)
        values = [json.dumps(v) if k in ("request", "result") else v for k, v in job.items()]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if job.get("idempotency_key") is not None:
                    old = self._db.execute(
                        "SELECT * FROM jobs WHERE key_id = ? AND idempotency_key = ?",
                        (job["key_id"], job["idempotency_key"])).fetchone()
                    if old is not None:
                        if old["request_hash"] != job["request_hash"]:
                            raise IdempotencyConflict(job["idempotency_key"])
                        self._db.execute("COMMIT")
                        return old, False
                if check_output is not None:
                    check_output(self._overlapping(job["output"]))
                if max_active:
                    active = self._db.execute(
                        "SELECT COUNT(*) AS n FROM jobs WHERE key_id = ? AND status IN (?, ?)",
                        (job["key_id"], *ACTIVE)).fetchone()["n"]
                    if active >= max_active:
                        raise LimitExceeded(active)
                self._db.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", values)
                row = self._db.execute("SELECT * FROM jobs WHERE id = ?",
                                       (job["id"],)).fetchone()
                self._db.execute("COMMIT")
                return row, True
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get_job(self, job_id, key_id=None):
        if key_id is None:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._one("SELECT * FROM jobs WHERE id = ? AND key_id = ?", (job_id, key_id))

    def job_by_share_hash(self, share_hash):
        return self._one("SELECT * FROM jobs WHERE share_hash = ? AND status = ?",
                         (share_hash, SUCCEEDED))

    def list_jobs(self, key_id, offset, limit):
        """``(jobs newest first, total)`` of one key."""
        rows = self._all("SELECT * FROM jobs WHERE key_id = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
                         (key_id, limit, offset))
        total = self._one("SELECT COUNT(*) AS n FROM jobs WHERE key_id = ?", (key_id,))["n"]
        return rows, total

    def jobs_with_status(self, status):
        """Jobs in ``status``, oldest first (the queue's order)."""
        return self._all("SELECT * FROM jobs WHERE status = ? ORDER BY seq", (status,))

    def overlapping_outputs(self, output):
        """``{(key id, output)}`` of the jobs whose output is ``output``, lies inside it or
        contains it: by path prefix (``security.overlaps``), outputs being stored canonical."""
        with self._lock:
            return self._overlapping(output)

    def _overlapping(self, output):
        # Three index lookups, not a scan: the output itself, the range of everything under
        # it ('/' < '0' by one code point), and each of its ancestors by name.
        base = output.rstrip("/")
        ancestors = [base[:i] for i, c in enumerate(base) if c == "/" and i > 0]
        marks = ", ".join("?" for _ in ancestors) or "NULL"
        rows = self._db.execute(
            "SELECT DISTINCT key_id, output FROM jobs WHERE output = ? "
            f"OR (output > ? AND output < ?) OR output IN ({marks})",
            (base, base + "/", base + "0", *ancestors)).fetchall()
        return {(r["key_id"], r["output"]) for r in rows}

    def mark_running(self, job_id, pid, version_id):
        return self._change(
            # ``error`` stays: a pending job's note (why it runs again) holds while it runs.
            "UPDATE jobs SET status = ?, pid = ?, version_id = ?, started = ?, "
            "attempts = attempts + 1 WHERE id = ? AND status = ?",
            (RUNNING, pid, version_id, time.time(), job_id, PENDING))

    def finish(self, job_id, status, error=None, result=None):
        """RUNNING -> ``status``; False when the job was no longer running (cancelled)."""
        return self._change(
            "UPDATE jobs SET status = ?, error = ?, result = ?, finished = ? "
            "WHERE id = ? AND status = ?",
            (status, error, None if result is None else json.dumps(result), time.time(),
             job_id, RUNNING))

    def cancel(self, job_id):
        """PENDING/RUNNING -> CANCELLED; returns the job as it was, or None if it had ended."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] not in ACTIVE:
                self._db.execute("COMMIT")
                return None
            self._db.execute("UPDATE jobs SET status = ?, finished = ? WHERE id = ?",
                             (CANCELLED, time.time(), job_id))
            self._db.execute("COMMIT")
            return row

    def requeue(self, job_id, reason):
        """RUNNING -> PENDING (its process died with the server): it runs again."""
        return self._change("UPDATE jobs SET status = ?, pid = NULL, error = ? "
                            "WHERE id = ? AND status = ?", (PENDING, reason, job_id, RUNNING))

    def counts(self):
        rows = self._all("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        return {r["status"]: r["n"] for r in rows}
