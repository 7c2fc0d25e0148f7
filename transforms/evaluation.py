"""Beam side of the job's quality figures: the evaluation starts as soon as the layout exists
and runs beside the render.

The in-process FnApiRunner (the DirectRunner) runs one stage at a time, so an evaluation
stage of its own would wait for the render or make the render wait. :class:`StartEvaluationFn`
instead starts the evaluation on a thread of the process (when ``beside`` is set, i.e. the
stages run in this process) and hands the layout's summary on to the render at once;
:func:`finish_evaluation`, placed after the render, collects the result. Where the two steps
run in different processes (Dataflow, Flink) it finds no thread there and evaluates itself.
"""
import concurrent.futures
import logging
import threading
import time

import apache_beam as beam

log = logging.getLogger(__name__)

_running = {}  # key -> Future of this process's evaluations
_lock = threading.Lock()


def timed(evaluate, layout_summary):
    """``{"quality": evaluate(layout_summary), "span": (start, end)}`` (epoch seconds)."""
    start = time.time()
    quality = evaluate(layout_summary)
    return {"quality": quality, "span": (start, time.time())}


class StartEvaluationFn(beam.DoFn):
    """Passes the layout summary on; with ``beside``, first starts ``evaluate(summary)`` on a
    thread of this process, filed under ``key`` for :func:`finish_evaluation`."""

    def __init__(self, evaluate, key, beside):
        self._evaluate, self._key, self._beside = evaluate, key, beside

    def process(self, layout_summary):
        if self._beside:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="evaluation")
            with _lock:
                _running[self._key] = pool.submit(timed, self._evaluate, layout_summary)
            pool.shutdown(wait=False)
        yield layout_summary


def finish_evaluation(layout_summary, evaluate, key, after=None):
    """The result of the evaluation started under ``key`` in this process (waiting for it), or
    of ``evaluate(layout_summary)`` run now when none was. ``after`` only orders the step (a
    side input: the render's summary)."""
    with _lock:
        future = _running.pop(key, None)
    if future is not None:
        return future.result()
    return timed(evaluate, layout_summary)
