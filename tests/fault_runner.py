"""Runs ``gridtsne run`` again and again, each time in a fresh fork killed at a named point.

    python -m tests.fault_runner RUN_FLAGS...     (then one point name per line on stdin)

For each point read from stdin it forks, sets ``GRIDTSNE_FAULT`` in the child, runs the job
there and answers ``<point> <status>`` on stdout (``-9``: killed by SIGKILL). The imports
(Beam, torch) are paid once here, not once per kill; this process itself runs nothing, so
forking it is safe. Used by tests/test_faults.py.
"""
import os
import sys

from gridtsne import faults
from pipelines import run as job


def run_killed(point, argv):
    pid = os.fork()
    if pid == 0:  # the child: the job, with the hook armed
        os.environ[faults.ENV] = point
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        code = 1
        try:
            job.run(argv)
            code = 0
        except BaseException:  # noqa: BLE001 - the parent reports the status
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main(argv):
    for line in sys.stdin:
        point = line.strip()
        if point:
            print(point, run_killed(point, argv), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
