"""When elements pass a point of the pipeline: the wall-clock marks the run's phase timings use.

``{"listed": files, ...} | MarkTimes()`` is one element, ``{"listed": (first, last), ...}``:
the wall-clock times (``time.time()``) at which the first and the last element of each
PCollection passed. The marks travel as data, so the step that writes the summary sees them
on any runner (see :func:`gridtsne.phases.job_spans`).
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
    """``{name: pcoll}`` -> one ``{name: (first, last)}`` dict: when each one's elements passed.

    A PCollection that stayed empty has no entry. One grouping for all the marks: each mark
    costs one ``Map`` in the graph (building a Beam graph costs time at launch).
    """

    def expand(self, pcolls):
        stamped = [pcoll | f"Stamp{name.title().replace(' ', '')}" >> beam.Map(
                       lambda _, name=name: (name, time.time()))
                   for name, pcoll in pcolls.items()]
        return (stamped
                | "FlattenStamps" >> beam.Flatten()
                | "FirstLast" >> beam.CombinePerKey(_FirstLast())
                | "ToDict" >> beam.combiners.ToDict())
