"""The operator's settings of one ``gridtsne serve`` process."""
import dataclasses
import os
import sys


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Everything the app, the job runner and the checks need, validated once at start.

    Attributes
    ----------
    database : str
        SQLite file holding the jobs and the key hashes.
    output_root : str
        New maps go to ``<output_root>/<id>``; an explicit ``output`` must lie under it.
    allow_input : tuple of str
        URL prefixes that ``inputs``, ``manifests`` and ``labels`` may name; nothing else.
    allow_model : tuple of str
        Values of ``options.model`` a caller may choose.
    job_flags : tuple of str
        Runner flags added to every job after the caller's options (they win): the expanded
        ``--flags_file``.
    storage_options : dict
        The jobs' per-protocol fsspec options (from their ``--s3_*`` and ``--storage_options``
        flags), so the server reads progress and pointers and signs URLs on the store the jobs
        write to.
    secret_file : str
        The server's secret, from which share tokens are made (default: the database's path
        plus ``.secret``; created 0600 when absent). Replacing it revokes every share link.
    docs_assets : str
        A folder with Swagger UI's files (npm ``swagger-ui-dist``), which /docs then loads from
        this server; None: /docs loads them from jsDelivr and says how to change that.
    """

    database: str
    output_root: str
    allow_input: tuple = ()
    allow_model: tuple = ()
    job_flags: tuple = ()
    log_dir: str = None
    max_concurrent_jobs: int = 1
    job_nice: int = 10
    max_active_per_key: int = 4
    requests_per_minute: int = 120
    max_body_bytes: int = 64 * 1024
    signed_url_expiry: int = 3600
    public_url: str = None
    python: str = sys.executable
    workdir: str = None
    storage_options: dict = dataclasses.field(default_factory=dict)
    secret_file: str = None
    docs_assets: str = None

    def __post_init__(self):
        if not self.output_root:
            raise ValueError("give --output_root: the prefix under which maps are written")
        for name in ("max_concurrent_jobs", "job_nice", "max_active_per_key",
                     "requests_per_minute", "max_body_bytes", "signed_url_expiry"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be 0 or more, got {getattr(self, name)!r}")
        if self.log_dir is None:
            object.__setattr__(self, "log_dir", os.path.join(
                os.path.dirname(os.path.abspath(self.database)), "logs"))
        if self.workdir is None:
            object.__setattr__(self, "workdir", os.getcwd())
        if self.docs_assets is not None:
            missing = [f for f in ("swagger-ui-bundle.js", "swagger-ui.css")
                       if not os.path.isfile(os.path.join(self.docs_assets, f))]
            if missing:
                raise ValueError(f"--docs_assets {self.docs_assets!r} lacks "
                                 f"{', '.join(missing)} (the npm package swagger-ui-dist's "
                                 "files)")
        if self.secret_file is None:
            object.__setattr__(self, "secret_file", os.path.abspath(self.database) + ".secret")
