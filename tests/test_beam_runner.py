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


def test_the_flags_are_parsed_once_per_options_class_not_once_per_transform(monkeypatch):
    """Beam asks the pipeline's options for a view at every transform it applies; plain
    PipelineOptions parse the command line again each time (about 1,600 parses, 0.4 s, for
    the whole job's graph). Counted on the real parser while 60 transforms are applied."""
    from apache_beam.options import pipeline_options as po

    parses = []
    real = po._BeamArgumentParser.parse_known_args

    def counting(self, *args, **kwargs):
        parses.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(po._BeamArgumentParser, "parse_known_args", counting)
    options = PipelineOptions(["--runner", "DirectRunner", "--temp_location", "/tmp/x"])
    p = new_pipeline(options)
    parses.clear()
    pcoll = p | beam.Create([1, 2, 3])
    for i in range(60):
        pcoll = pcoll | f"Add{i}" >> beam.Map(lambda x: x + 1)
    assert len(parses) < 20, len(parses)  # one per options class at most, not per transform
    # The views share one store of values, as Beam's own views do.
    from apache_beam.options.pipeline_options import GoogleCloudOptions, TypeOptions
    held = p.options
    assert held.view_as(TypeOptions) is held.view_as(TypeOptions)
    held.view_as(GoogleCloudOptions).temp_location = "/tmp/y"
    assert held.get_all_options()["temp_location"] == "/tmp/y"
    assert held.view_as(GoogleCloudOptions).temp_location == "/tmp/y"
    assert_that(pcoll, equal_to([61, 62, 63]))
    p.run().wait_until_finish()


def test_building_the_whole_job_loads_neither_torch_nor_timm(tmp_path):
    """Launching `gridtsne run` checks the model and builds the graph without importing torch
    (~1.2 CPU-s) or timm (~1 CPU-s): the default weights are hashed, not built, and Beam's
    RunInference module is imported without its torch part. In a fresh interpreter, as a
    launch is."""
    from tests.fresh_python import run_python

    (tmp_path / "a.jpg").write_bytes(b"not read")
    code = ("import sys\n"
            "from apache_beam.options.pipeline_options import PipelineOptions\n"
            "from pipelines import run as R\n"
            "from pipelines.beam_runner import new_pipeline\n"
            f"o = PipelineOptions(['--input', {str(tmp_path / 'a.jpg')!r}, '--output', "
            f"{str(tmp_path / 'map')!r}, '--device', 'cpu'])\n"
            "job = R.job_from_options(o)\n"
            "assert job.embed.metadata['weights_sha256'], job.embed.metadata\n"
            "R.build_pipeline(new_pipeline(o), job)\n"
            "import transforms.embed_inference, apache_beam.ml.inference.base as B\n"
            "assert B.resource is not None, 'RunInference lost its memory figures'\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'timm') if m in sys.modules))\n")
    out = run_python(code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr[-3000:]
