"""When elements pass a point of the pipeline: the wall-clock marks the run's phase timings use.

``pcoll | MarkTimes("listed")`` is one element, ``("listed", (first, last))``: the wall-clock
times (``time.time()``) at which the first and the last element of ``pcoll`` passed, or
``(None, None)`` when it was empty. The marks travel as data, so the step that writes the
summary sees them on any runner (see :func:`gridtsne.phases.job_spans`).
"""
import time

import apache_beam as beam


class _FirstLast(beam.CombineFn):
    """(earliest, latest) of the times; (None, None) for none."""

    def create_accumulator(self):
        return (None, None)

    def add_input(self, acc, t):
        lo, hi = acc
        return (t if lo is None or t < lo else lo, t if hi is None or t > hi else hi)

    def merge_accumulators(self, accs):
        out = (None, None)
        for lo, hi in accs:
            if lo is not None:
                out = self.add_input(self.add_input(out, lo), hi)
        return out

    def extract_output(self, acc):
        return acc


class MarkTimes(beam.PTransform):
    """``pcoll`` -> one ``(name, (first, last))`` element: when its elements passed."""

    def __init__(self, name, label=None):
        super().__init__(label)
        self._name = name

    def expand(self, pcoll):
        name = self._name
        return (pcoll
                | "Now" >> beam.Map(lambda _: time.time())
                | "FirstLast" >> beam.CombineGlobally(_FirstLast())
                | "Name" >> beam.Map(lambda span: (name, span)))
