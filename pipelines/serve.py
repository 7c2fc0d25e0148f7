"""``gridtsne serve``: the HTTP API that runs visualizations for callers (docs/service.md).

    gridtsne serve --output_root s3://maps --allow_input s3://photos/ [--flags_file F] [--port 8080]
    gridtsne serve --create_key alice        # prints a new API key once
    gridtsne serve --revoke_key alice | --list_keys

Keys and jobs live in ``--database`` (SQLite); the key commands only touch it and exit.
"""
import argparse
import logging
import os
import sqlite3
import sys

from gridtsne.flagfiles import read_flags_file
from gridtsne.service import keys
from gridtsne.service.config import ServiceConfig
from gridtsne.service.store import Store
from pipelines.options import add_storage_args, storage_options_from_args

DEFAULT_DATABASE = "gridtsne-serve.db"


def parser():
    p = argparse.ArgumentParser(prog="gridtsne serve", description=__doc__.split("\n")[0])
    p.add_argument("--database", default=DEFAULT_DATABASE,
                   help="SQLite file of jobs and API-key hashes, created 0600 "
                        "(default: %(default)s)")
    p.add_argument("--secret_file", default=None,
                   help="the server's secret, from which share links are made; created 0600 "
                        "(default: the database's path + '.secret'); replacing it revokes "
                        "every share link")
    keys_ = p.add_argument_group("API keys (these act on --database and exit)")
    keys_.add_argument("--create_key", metavar="NAME", help="create a key and print it once")
    keys_.add_argument("--revoke_key", metavar="NAME", help="revoke the key called NAME")
    keys_.add_argument("--list_keys", action="store_true", help="list key names (no keys)")
    srv = p.add_argument_group("server")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: %(default)s; put a TLS proxy in "
                          "front, see docs/service.md)")
    srv.add_argument("--port", type=int, default=8080)
    srv.add_argument("--public_url", default=None,
                     help="the URL callers reach this server at (behind a proxy), used in "
                          "the links of answers; default: the request's own")
    srv.add_argument("--output_root", help="maps are written under this prefix (required)")
    srv.add_argument("--allow_input", action="append", default=[], metavar="PREFIX",
                     help="a URL prefix inputs, manifests and labels may name (repeat it); "
                          "each job gets the same list and refuses whatever it would read "
                          "outside it (manifest lines, symlinks, redirects); none given: no "
                          "input is accepted")
    srv.add_argument("--allow_model", action="append", default=[], metavar="NAME",
                     help="a value of options.model callers may choose (repeat it); none "
                          "given: any registered name, but no 'module:ATTR'")
    srv.add_argument("--flags_file", action="append", default=[], metavar="PATH",
                     help="runner flags every job gets after the caller's options, e.g. "
                          "configs/dataflow-gpu.flags (repeat it)")
    srv.add_argument("--job_flag", action="append", default=[], metavar="FLAG",
                     help="one more flag for every job, e.g. --job_flag=--direct_num_workers=1")
    srv.add_argument("--log_dir", default=None,
                     help="where the jobs' logs go (default: logs/ beside --database)")
    srv.add_argument("--max_concurrent_jobs", type=int, default=1,
                     help="jobs running at once; the rest wait in order (0: queue only)")
    srv.add_argument("--job_nice", type=int, default=10,
                     help="nice increment of the job processes, so that requests stay fast "
                          "while jobs use every core (0: same priority as the server)")
    srv.add_argument("--max_active_per_key", type=int, default=4,
                     help="pending + running jobs per key before 429 (0: no limit)")
    srv.add_argument("--requests_per_minute", type=int, default=120,
                     help="requests per key per minute before 429 (0: no limit)")
    srv.add_argument("--max_body_bytes", type=int, default=64 * 1024,
                     help="larger request bodies get 413")
    srv.add_argument("--signed_url_expiry", type=int, default=3600,
                     help="seconds the signed URLs of s3:// and gs:// maps stay valid")
    srv.add_argument("--docs_assets", default=None, metavar="DIR",
                     help="serve /docs with Swagger UI from DIR (the files of the npm package "
                          "swagger-ui-dist) instead of loading it from jsDelivr")
    srv.add_argument("--log_level", default="info")
    return p


def _key_command(args, store):
    if args.create_key:
        key = keys.new_key()
        try:
            store.add_key(keys.check_name(args.create_key), keys.hash_key(key))
        except ValueError as err:
            raise SystemExit(f"gridtsne serve: {err}") from None
        print(key)
        print(f"gridtsne serve: key {args.create_key!r} created; it is shown only this once",
              file=sys.stderr)
    elif args.revoke_key:
        if not store.revoke_key(args.revoke_key):
            raise SystemExit(f"gridtsne serve: no active key named {args.revoke_key!r}")
        print(f"key {args.revoke_key!r} revoked")
    else:
        for row in store.list_keys():
            print(f"{row['name']}\t{'revoked' if row['revoked'] else 'active'}")


def _job_storage_options(job_flags):
    """The storage options the jobs get from their own ``--s3_*``/``--storage_options`` flags."""
    flags = argparse.ArgumentParser(add_help=False)
    add_storage_args(flags)
    return storage_options_from_args(flags.parse_known_args(list(job_flags))[0])


def config_from_args(args):
    job_flags = [f for path in args.flags_file for f in read_flags_file(path)] + args.job_flag
    return ServiceConfig(
        database=os.path.abspath(args.database), output_root=args.output_root,
        allow_input=tuple(args.allow_input), allow_model=tuple(args.allow_model),
        job_flags=tuple(job_flags), log_dir=args.log_dir,
        max_concurrent_jobs=args.max_concurrent_jobs, job_nice=args.job_nice,
        max_active_per_key=args.max_active_per_key,
        requests_per_minute=args.requests_per_minute, max_body_bytes=args.max_body_bytes,
        signed_url_expiry=args.signed_url_expiry, public_url=args.public_url,
        storage_options=_job_storage_options(job_flags), secret_file=args.secret_file,
        docs_assets=args.docs_assets)


def run(argv=None):
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.create_key or args.revoke_key or args.list_keys:
        database = os.path.abspath(args.database)
        try:
            secret = keys.load_secret(args.secret_file or database + ".secret")
            store = Store(database, share_hash=lambda job_id: keys.hash_key(
                keys.share_token(secret, job_id)))
        except (OSError, ValueError, sqlite3.Error) as err:
            raise SystemExit(f"gridtsne serve: {err}") from None
        try:
            _key_command(args, store)
        finally:
            store.close()
        return 0
    import uvicorn

    from gridtsne.service.app import create_app

    try:
        app = create_app(config_from_args(args))
    except (OSError, ValueError, sqlite3.Error) as err:
        raise SystemExit(f"gridtsne serve: {err}") from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(app, host=args.host, port=args.port,
                log_level=args.log_level, proxy_headers=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
