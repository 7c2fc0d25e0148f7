"""The service's output-overlap check (issue 23): index lookups against a scan, side by side.

Every POST asks the store which stored outputs are, lie inside or contain the new one, inside the
insert's transaction and on the event loop. This fills a real SQLite file with N jobs and times
both queries on it, checking they agree:

    python benchmarks/output_overlap.py [--jobs 1000 10000 50000] [--queries 200]

``index``: the store's query (the output, the range under it, its ancestors, by the index on
``output``). ``scan``: the first version, ``substr()`` comparisons over every row.
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from gridtsne.service import store as S  # noqa: E402

SCAN = ("SELECT DISTINCT key_id, output FROM jobs WHERE output = ? "
        "OR substr(output, 1, ?) = ? OR substr(?, 1, length(rtrim(output, '/')) + 1) = "
        "rtrim(output, '/') || '/'")


def scan(store, output):
    base = output.rstrip("/")
    rows = store._db.execute(SCAN, (output, len(base) + 1, base + "/", output)).fetchall()
    return {(r["key_id"], r["output"]) for r in rows}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, nargs="+", default=[1000, 10000, 50000])
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        store = S.Store(os.path.join(folder, "jobs.db"))
        store.add_key("k", "h")
        print(f"{'jobs':>7} {'index ms':>9} {'scan ms':>9} {'scan/index':>10}")
        have = 0
        for n in sorted(args.jobs):
            store._db.execute("BEGIN")
            for i in range(have, n):
                store._db.execute(
                    "INSERT INTO jobs (id, key_id, status, request, output, request_hash, "
                    "share_hash, created) VALUES (?, 1, 'SUCCEEDED', '{}', ?, 'x', ?, 0)",
                    (f"j{i}", f"/srv/maps/v{i:08x}", f"s{i}"))
            store._db.execute("COMMIT")
            have = n
            # Half the queries hit a stored map (inside it), half miss.
            outputs = [f"/srv/maps/v{(i * 7919) % (2 * n):08x}/versions/x"
                       for i in range(args.queries)]
            times = {}
            for name, fn in (("index", store._overlapping), ("scan", lambda o: scan(store, o))):
                start = time.perf_counter()
                answers = [fn(o) for o in outputs]
                times[name] = (time.perf_counter() - start) / len(outputs) * 1e3
                times[name + "_answers"] = answers
            assert times["index_answers"] == times["scan_answers"]
            print(f"{n:>7} {times['index']:>9.3f} {times['scan']:>9.3f} "
                  f"{times['scan'] / times['index']:>10.0f}")
        store.close()


if __name__ == "__main__":
    main()
