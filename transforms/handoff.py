"""Values that skip the runner where every stage runs in this process.

The in-memory DirectRunner runs every stage in the process that launched the pipeline, one
after another, yet moves each element through its coders and buffers: a value put in one
stage and taken two stages later is encoded, copied about half a dozen times and decoded,
while nothing else can run. For the render's thumbnails (100 MB for 20,480 photos) that is
about 0.6 s of the launching process alone (docs/render.md, "On every core").

A :class:`Handoff` made for such a pipeline keeps each value it is given in this process and
gives the runner a small :class:`Ref` instead; the consuming stage trades the ref back for
the value, once. On any other runner (Dataflow, Flink, the PortableRunner, the DirectRunner's
``multi_processing`` mode) stages may run in other processes, so the handoff is off and
values travel through the runner as before. A ref whose value is not here (a stage run in
another process after all, or taken twice) is an error, never an empty value: nothing is
lost without a word.
"""
import dataclasses
import itertools
import threading
import uuid

_values = {}  # (handoff id, number) -> value, for every Handoff of this process
_lock = threading.Lock()
_numbers = itertools.count()


def runs_in_this_process(pipeline):
    """Whether ``pipeline``'s runner runs all its stages in this process: the DirectRunner
    (or its FnApiRunner) in its default ``in_memory`` mode."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.direct.direct_runner import DirectRunner, SwitchingDirectRunner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    if not isinstance(pipeline.runner, (DirectRunner, SwitchingDirectRunner, FnApiRunner)):
        return False
    return pipeline.options.view_as(DirectOptions).direct_running_mode == "in_memory"


@dataclasses.dataclass(frozen=True)
class Ref:
    """Where a handed-off value waits: its handoff's id and its number there."""

    handoff: str
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
        ref = Ref(self.id, next(_numbers))
        with _lock:
            _values[(ref.handoff, ref.number)] = value
        return ref

    def receive(self, value):
        """The value :meth:`send` was given: taken out of this process's keeping."""
        if not isinstance(value, Ref):
            return value
        with _lock:
            found = _values.pop((value.handoff, value.number), _values)
        if found is _values:
            raise RuntimeError(f"handed-off value {value.number} of {value.handoff} is not in "
                               f"this process: the runner ran its stages in another process "
                               f"(or ran one twice); run with the DirectRunner's in_memory "
                               f"mode or turn the handoff off")
        return found

    def drop(self):
        """Forget every value of this handoff still kept; how many there were."""
        with _lock:
            keys = [k for k in _values if k[0] == self.id]
            for key in keys:
                del _values[key]
        return len(keys)


def kept():
    """How many handed-off values this process keeps, of every handoff."""
    with _lock:
        return len(_values)
