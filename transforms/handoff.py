"""Values that skip the runner where every stage runs in this process.

The in-memory DirectRunner runs every stage in the process that launched the pipeline, one
after another, yet moves each element through its coders and buffers: a value put in one
stage and taken two stages later is encoded, copied about half a dozen times and decoded,
while nothing else can run. For the render's thumbnails (73 MB for 20,480 photos) that was
0.44 s before the first band could start, with the tile workers idle (docs/render.md, "On
every core").

A :class:`Handoff` made for such a pipeline keeps each value it is given in this process and
gives the runner a small :class:`Ref` instead; the consuming stage trades the ref back for
the value, once. On any other runner (Dataflow, Flink, the PortableRunner, the DirectRunner's
``multi_processing`` and ``multi_threading`` modes, or with ``--direct_runner_bundle_repeat``)
the handoff is off and values travel through the runner as before. A ref names the process
that made it, so a ref taken in another process (a stage run elsewhere after all) or taken
twice (a bundle run again) is an error, never an empty value nor another process's value of
the same number: nothing is lost or swapped without a word.
"""
import dataclasses
import itertools
import os
import uuid
import weakref

# handoff id -> {number: value}, for every Handoff of this process. No lock: each change is
# one operation on a dict of str or int keys (atomic), and a lock could deadlock, because
# drop also runs from the garbage collector (drop_with), which may fire in any thread at any
# allocation, one made while that thread held the lock included.
_values = {}
_numbers = itertools.count()
_MISSING = object()
# This process, in every Ref it makes: each process counts its refs from 0, so a number alone
# would find another value here when a stage runs in another process (Beam's worker
# processes, a forked child).
_process = uuid.uuid4().hex


def _new_process():
    global _process
    _process = uuid.uuid4().hex


if hasattr(os, "register_at_fork"):  # no fork, no copies, where it is missing
    os.register_at_fork(after_in_child=_new_process)


def runs_in_this_process(pipeline):
    """Whether ``pipeline``'s runner runs each bundle of every stage once, in this process:
    the DirectRunner (or its FnApiRunner with its own in-process environment) in its default
    ``in_memory`` mode, its bundles not replayed (``--direct_runner_bundle_repeat``)."""
    from apache_beam.options.pipeline_options import DirectOptions, PortableOptions
    from apache_beam.runners.direct.direct_runner import DirectRunner, SwitchingDirectRunner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import EmbeddedPythonEnvironment

    runner, options = pipeline.runner, pipeline.options
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode != "in_memory" or direct.direct_runner_bundle_repeat:
        return False
    if isinstance(runner, FnApiRunner):
        # An environment given to the FnApiRunner itself (a subprocess) outlives in_memory.
        return isinstance(getattr(runner, "_default_environment", None),
                          EmbeddedPythonEnvironment)
    if isinstance(runner, (DirectRunner, SwitchingDirectRunner)):
        # Its first choice, the PrismRunner, runs Python stages in this process (LOOPBACK)
        # unless told otherwise; its fallbacks always do.
        return options.view_as(PortableOptions).environment_type in (None, "", "LOOPBACK")
    return False


@dataclasses.dataclass(frozen=True)
class Ref:
    """Where a handed-off value waits: its handoff's id, the process that keeps it and its
    number there."""

    handoff: str
    process: str
    number: int


@dataclasses.dataclass(frozen=True)
class Handoff:
    """Hands values from one stage to a later one in this process, if ``enabled``; else
    :meth:`send` and :meth:`receive` give values back as they are. Pickled with the stages
    that use it: only its id travels, the values stay in this module."""

    enabled: bool
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)

    def send(self, value):
        """``value`` itself, or a :class:`Ref` to it kept here until :meth:`receive`."""
        if not self.enabled:
            return value
        ref = Ref(self.id, _process, next(_numbers))
        _values.setdefault(self.id, {})[ref.number] = value
        return ref

    def receive(self, value):
        """The value :meth:`send` was given: taken out of this process's keeping."""
        if not isinstance(value, Ref):
            return value
        if value.process != _process:
            raise RuntimeError(f"handed-off value {value.number} of {value.handoff} is not in "
                               f"this process: the runner ran the stage that took it in "
                               f"another process than the one that made it; run with the "
                               f"DirectRunner's in_memory mode or turn the handoff off")
        found = _values.get(value.handoff, {}).pop(value.number, _MISSING)
        if found is _MISSING:
            raise RuntimeError(f"handed-off value {value.number} of {value.handoff} is not in "
                               f"this process any more: it was taken already (the runner ran "
                               f"a bundle twice) or dropped; turn the handoff off on this "
                               f"runner")
        return found

    def drop_with(self, owner):
        """This handoff, its values dropped when ``owner`` (the pipeline) is: a run that failed
        half-way leaves the values its later stages never took (a failed in-memory render of
        20,480 photos, up to its 73 MB of thumbnails) for no longer than its pipeline lives."""
        if self.enabled:
            weakref.finalize(owner, self.drop)
        return self

    def drop(self):
        """Forget every value of this handoff still kept; how many there were."""
        return len(_values.pop(self.id, {}))


def kept():
    """How many handed-off values this process keeps, of every handoff."""
    return sum(len(values) for values in list(_values.values()))
