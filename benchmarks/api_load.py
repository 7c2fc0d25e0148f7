"""Load on ``gridtsne serve`` while a real job runs: latency of GET and POST, errors, memory.

    python benchmarks/api_load.py                        # 100 clients for 20 s
    python benchmarks/api_load.py --clients 200 --seconds 60

A real server (uvicorn on 127.0.0.1, a child process) runs one real ``gridtsne run`` job over
the 3,781 photos of ../shared/data/clothing-small (the tiny CNN of tests/tiny_model.py unless
``--model`` says otherwise), long enough to run through the whole benchmark; the POSTed
visualizations queue behind it (``--max_concurrent_jobs 1``) and are not run. Meanwhile ``--clients`` concurrent clients, spread over
``--processes`` client processes, loop for ``--seconds``: each request is a GET of the running
job (``--post_share`` of them a POST of a new visualization, which queues behind the job).
Printed: p50 / p99 / max latency per kind, requests per second, non-2xx and 5xx counts, the
server's RSS at the start and the end of the load, and each target as measured / target.
Targets (the issue's, on the 2-core machine): 100 clients, p99 GET < 50 ms, zero 5xx, flat RSS.
"""
import argparse
import asyncio
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.service_server import FAST_OPTIONS, Server, wait_for  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "clothing-small"
P99_GET_TARGET_MS = 50.0
SETUP_S = 5.0


def cpu_s(pid):
    """User + system CPU seconds the process used so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().split(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average():
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _client_loop(c, job_id, inputs, start_at, stop_at, post_share, think_s, seed, out):
    """One client: requests one after the other (pausing ``think_s`` +-50%) until ``stop_at``."""
    rng = random.Random(seed)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()) + rng.uniform(0, think_s))
    while time.monotonic() < stop_at:
        kind = "POST" if rng.random() < post_share else "GET"
        start = time.perf_counter()
        try:
            if kind == "GET":
                r = await c.get(f"/v2/visualizations/{job_id}")
            else:
                r = await c.post("/v2/visualizations",
                                 json={"inputs": inputs, "options": {"seed": rng.randrange(10**6)}})
            status = r.status_code
        except httpx.HTTPError as err:
            status = f"{type(err).__name__}"
        out.append((kind, (time.perf_counter() - start) * 1000, status))
        if think_s:
            await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))


def _client_process(args):
    url, key, job_id, inputs, start_wall, stop_wall, clients, post_share, think_s, seed = args
    offset = time.monotonic() - time.time()
    out = []

    async def main():
        # One connection pool per process, one connection per client: set up (TLS context,
        # imports) before the clock starts, so that the client's own start-up is not measured.
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Key {key}"},
                                     timeout=30, limits=limits) as c:
            await asyncio.gather(*[_client_loop(c, job_id, inputs, start_wall + offset,
                                                stop_wall + offset, post_share, think_s,
                                                seed * 1000 + i, out)
                                   for i in range(clients)])
    asyncio.run(main())
    return out


def summarize(kind, rows):
    ms = np.array([r[1] for r in rows if r[0] == kind])
    codes = [r[2] for r in rows if r[0] == kind]
    if not len(ms):
        return None
    return {"n": len(ms), "p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
            "max": ms.max(), "non2xx": sum(1 for c in codes if not (isinstance(c, int)
                                                                  and 200 <= c < 300)),
            "5xx": sum(1 for c in codes if isinstance(c, int) and c >= 500),
            "failed": sum(1 for c in codes if not isinstance(c, int))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--processes", type=int, default=2, help="client processes")
    ap.add_argument("--post_share", type=float, default=0.1)
    ap.add_argument("--think_s", type=float, default=1.0,
                    help="mean pause of a polling client between its requests")
    ap.add_argument("--model", default=FAST_OPTIONS["model"])
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is absent: the benchmark's job runs on clothing-small")
    work = Path(tempfile.mkdtemp(prefix="gridtsne-api-load-"))
    server = Server(work / "srv", "--output_root", work / "maps", "--allow_input", DATA,
                    "--allow_model", args.model, "--max_concurrent_jobs", "1",
                    "--max_active_per_key", "0", "--requests_per_minute", "0")
    key = server.create_key("load")
    inputs = [str(DATA)]
    with server, server.client(key) as c:
        r = c.post("/v2/visualizations", json={"inputs": inputs,
                                               "options": {**FAST_OPTIONS, "model": args.model}})
        r.raise_for_status()
        job_id = r.json()["output"]["id"]
        wait_for(c, job_id, ("RUNNING",), timeout=60)
        for _ in range(50):  # warm the server's code paths before measuring memory
            c.get(f"/v2/visualizations/{job_id}")
        rss_start = rss_mib(server.proc.pid)
        results = []
        for name, think in (("polling", args.think_s), ("saturation", 0.0)):
            cpu0, load0 = cpu_s(server.proc.pid), load_average()
            rows, elapsed = run_phase(server.url, key, job_id, inputs, think, args)
            cpu = cpu_s(server.proc.pid) - cpu0
            results.append((name, think, rows, elapsed, cpu, (load0 + load_average()) / 2))
        rss_end = rss_mib(server.proc.pid)
        job_status = c.get(f"/v2/visualizations/{job_id}").json()["output"]["status"]["code"]
        stored = c.get("/v2/visualizations", params={"limit": 1}).json()["pagination"]["total"]
    report(args, results, job_status, stored, rss_start, rss_end)


def run_phase(url, key, job_id, inputs, think_s, args):
    start_at = time.time() + SETUP_S  # the client processes start and connect first
    stop_at = start_at + args.seconds
    per = [args.clients // args.processes + (i < args.clients % args.processes)
           for i in range(args.processes)]
    jobs = [(url, key, job_id, inputs, start_at, stop_at, n, args.post_share, think_s, i)
            for i, n in enumerate(per)]
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        rows = [row for part in pool.map(_client_process, jobs) for row in part]
    return rows, stop_at - start_at


def report(args, results, job_status, stored, rss_start, rss_end):
    print(f"gridtsne serve under load: {args.clients} clients in {args.processes} processes, "
          f"{args.seconds:.0f} s per phase, {os.cpu_count()} CPUs, one real job running "
          f"(status at the end: {job_status})")
    print(f"{'phase':<11} {'kind':<5} {'requests':>8} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'non-2xx':>8} {'5xx':>5} {'conn err':>8}")
    errors, p99 = 0, {}
    for name, think, rows, elapsed, cpu, load in results:
        for kind in ("GET", "POST"):
            st = summarize(kind, rows)
            if not st:
                continue
            errors += st["5xx"] + st["failed"]
            kinds = sorted({str(r[2]) for r in rows if r[0] == kind and not (
                isinstance(r[2], int) and 200 <= r[2] < 300)})
            p99[name, kind] = st["p99"]
            print(f"{name:<11} {kind:<5} {st['n']:>8} {st['n'] / elapsed:>7.0f} "
                  f"{st['p50']:>8.1f} {st['p99']:>8.1f} {st['max']:>8.1f} {st['non2xx']:>8} "
                  f"{st['5xx']:>5} {st['failed']:>8}" + (f"  ({', '.join(kinds)})" if kinds else ""))
        print(f"{'':<11} server CPU {cpu / max(1, len(rows)) * 1000:.2f} ms per request, "
              f"{cpu / elapsed:.0%} of one core; machine load average {load:.1f} "
              f"on {os.cpu_count()} CPUs")
    print(f"(polling: each client pauses {args.think_s} s +-50% between requests, as a "
          f"status poller does; saturation: no pause, every client back-to-back)")
    print(f"visualizations stored at the end: {stored} (1 running + the POSTs, queued)")
    print(f"server RSS: {rss_start:.1f} MiB at the start, {rss_end:.1f} MiB at the end "
          f"(end / start = {rss_end / rss_start:.2f})")
    get = p99["polling", "GET"]
    print(f"targets: polling p99 GET {get:.1f} ms / {P99_GET_TARGET_MS:.0f} ms = "
          f"{get / P99_GET_TARGET_MS:.2f} ({'met' if get < P99_GET_TARGET_MS else 'MISSED'}); "
          f"saturation / polling p99 GET = {p99['saturation', 'GET'] / get:.1f}; "
          f"5xx + connection errors: {errors} ({'met' if errors == 0 else 'MISSED'})")


if __name__ == "__main__":
    main()
