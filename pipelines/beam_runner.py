"""The Beam pipeline of a gridtsne job, on the runner its options name.

Beam 2.77's DirectRunner (the default runner) first hands a pipeline to the PrismRunner, which
downloads a Prism binary from GitHub at run time; offline that attempt fails and Beam falls
back to its in-process FnApiRunner. gridtsne downloads nothing at run time, and its batch
pipelines are ones the FnApiRunner runs (the DirectRunner would pick it for them anyway), so for
the DirectRunner the pipeline is built on the FnApiRunner directly, set up as the DirectRunner
sets it up (the job's options in its provision info; ``--direct_num_workers`` and
``--direct_running_mode`` still apply). Every other runner (PortableRunner, DataflowRunner,
FlinkRunner ...) is Beam's to create from the options.
"""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions


class ParsedOnce(PipelineOptions):
    """Pipeline options whose view of each options class is made once and then re-used.

    Beam's ``view_as(cls)`` parses the command line again on every call, and Beam calls it
    for every transform it applies (about 1,600 times while the job's graph is built, about
    0.4 s of the launch). A view holds no values of its own (they live in the options'
    shared store), so handing back the same view is the same answer.
    """

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})
        view = views.get(cls)
        if view is None:
            view = views[cls] = super().view_as(cls)
        return view


def is_direct(options):
    """True when ``options`` name the DirectRunner (also when they name no runner)."""
    name = options.view_as(StandardOptions).runner or StandardOptions.DEFAULT_RUNNER
    if not isinstance(name, str):
        return False
    return name.rsplit(".", 1)[-1].lower() in ("direct", "directrunner")


def local_runner(options):
    """Beam's in-process FnApiRunner, given the job's options as the DirectRunner gives them."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(info))


def new_pipeline(options):
    """``beam.Pipeline`` for ``options``: on the FnApiRunner where they name the DirectRunner.

    The pipeline holds ``options`` as :class:`ParsedOnce` (the flags parsed once per options
    class, not once per transform).
    """
    options = options.view_as(ParsedOnce)
    if is_direct(options):
        return beam.Pipeline(runner=local_runner(options), options=options)
    return beam.Pipeline(options=options)
