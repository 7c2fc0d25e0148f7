"""What `gridtsne run` spends before its job starts: seconds per launch step, in fresh processes.

    python benchmarks/launch_steps.py                      # a throw-away folder, 3 processes
    python benchmarks/launch_steps.py --repeat 5 -- --device cpu --model resnet50

Each repeat is a fresh interpreter that does what ``pipelines.run.run`` does before the runner
starts, timing each step: importing Beam's options, importing ``pipelines.run``, parsing the
flags, the model check (``job_from_options``), ``new_pipeline``, ``build_pipeline`` and Beam's
translation of the graph (``to_runner_api``, the first thing ``p.run()`` does). Prints the
median of each step and which heavy modules (torch, timm, torchvision, scipy) the launcher
loaded. Flags after ``--`` go to ``gridtsne run``. The launch phase from outside, with the
first progress line, is ``benchmarks/job_phases.py``'s.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STEPS = r'''
import json, sys, time
t0 = time.perf_counter()
marks = []
def mark(name):
    marks.append((name, time.perf_counter()))
from apache_beam.options.pipeline_options import PipelineOptions
mark("import Beam's options")
import pipelines.run as R
mark("import pipelines.run")
argv = R.expand_flags_files(sys.argv[1:])
R.check_inputs(argv)
labels, argv = R.render_stage.split_labels(argv)
options = PipelineOptions(argv)
version = R.version_of(options)
mark("parse the flags")
job = R.job_from_options(options, labels, version)
mark("model check (job_from_options)")
p = R.new_pipeline(options)
mark("new_pipeline")
R.build_pipeline(p, job)
mark("build_pipeline")
p.to_runner_api()
mark("Beam's translation (to_runner_api)")
steps, prev = {}, t0
for name, t in marks:
    steps[name] = t - prev
    prev = t
print(json.dumps({"steps": steps, "modules": sorted(
    m for m in ("torch", "timm", "torchvision", "scipy") if m in sys.modules)}))
'''


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gridtsne-launch-"))
    (work / "photos").mkdir()
    (work / "photos" / "a.jpg").write_bytes(b"never read: the job is not run")
    flags = ["--input", str(work / "photos"), "--output", str(work / "map"), *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = []
    for _ in range(args.repeat):
        out = subprocess.run([sys.executable, "-c", STEPS, *flags], env=env, check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    names = list(runs[0]["steps"])
    print(f"{'launch step':40}{'median s':>10}   (each run)")
    for name in names:
        times = [r["steps"][name] for r in runs]
        print(f"{name:40}{statistics.median(times):10.3f}   "
              f"({', '.join(f'{t:.3f}' for t in times)})")
    totals = [sum(r["steps"].values()) for r in runs]
    print(f"{'total before the runner starts':40}{statistics.median(totals):10.3f}   "
          f"(+ the interpreter's start; {os.cpu_count()} cores)")
    print(f"heavy modules the launcher loaded: {runs[-1]['modules'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
