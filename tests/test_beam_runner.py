"""The DirectRunner runs gridtsne's pipelines in-process without trying Prism (a download)."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability import prism_runner
from apache_beam.testing.util import assert_that, equal_to

from pipelines.beam_runner import is_direct, new_pipeline


@pytest.mark.parametrize("args,direct", [
    ([], True), (["--runner", "DirectRunner"], True), (["--runner", "direct"], True),
    (["--runner", "PortableRunner"], False), (["--runner", "DataflowRunner"], False)])
def test_is_direct(args, direct):
    assert is_direct(PipelineOptions(args)) is direct


def test_direct_runner_runs_without_trying_prism(monkeypatch):
    # A spy on the real PrismRunner (not a stand-in for anything the test needs): Beam's
    # DirectRunner calls it first, and it would download its binary from GitHub.
    tried = []

    def spy(self, pipeline, options):
        tried.append(True)
        raise RuntimeError("PrismRunner tried")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", spy)
    options = PipelineOptions(["--runner", "DirectRunner"])
    with new_pipeline(options) as p:
        out = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 10) | beam.CombineGlobally(sum)
        assert_that(out, equal_to([60]))
    assert tried == []
    # Built the plain way, the same pipeline goes to Prism first (what new_pipeline avoids).
    with beam.Pipeline(options=options) as p:
        assert_that(p | beam.Create([1, 2]) | beam.CombineGlobally(sum), equal_to([3]))
    assert tried == [True]


def test_other_runners_are_left_to_beam():
    from apache_beam.runners.portability.portable_runner import PortableRunner
    p = new_pipeline(PipelineOptions(["--runner", "PortableRunner", "--job_endpoint", "embed"]))
    assert isinstance(p.runner, PortableRunner)
