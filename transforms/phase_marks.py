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
    """``{name: pcoll or (pcolls)}`` -> one ``{name: (first, last)}`` dict: when each one's
    elements passed (several PCollections under one name: the first and last of them all).

    A PCollection that stayed empty has no entry. One grouping for all the marks: each mark
    costs one ``Map`` in the graph (building a Beam graph costs time at launch). Each
    PCollection is stamped where it is made, never after a ``Flatten``: the FnApiRunner runs
    what follows a Flatten of several stages' outputs as a later stage, so a stamp there
    would tell when that stage ran, not when the element passed.
    """

    def expand(self, pcolls):
        stamped = []
        for name, group in pcolls.items():
            group = group if isinstance(group, (tuple, list)) else [group]
            label = name.title().replace(" ", "")
            for i, pcoll in enumerate(group):
                stamped.append(pcoll | f"Stamp{label}{i or ''}" >> beam.Map(
                    lambda _, name=name: (name, time.time())))
        return (stamped
                | "FlattenStamps" >> beam.Flatten()
                | "FirstLast" >> beam.CombinePerKey(_FirstLast())
                | "ToDict" >> beam.combiners.ToDict())
