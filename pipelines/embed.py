"""The embedding stage: any fsspec image collection in, ``vectors/`` and ``errors/`` Parquet out.

    python -m pipelines.embed --input 's3://photos/2024/**' --input ./more_photos \\
        --output s3://maps/run1 [--model NAME] [Beam flags: --runner, --direct_num_workers ...]

``run()`` parses and validates the flags, ``build_pipeline()`` only wires the transforms, so a
bigger job can embed its own file list inside one pipeline (see ``docs/embed.md``).
"""
import argparse
import dataclasses
import datetime
import logging
import sys
import uuid

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from gridtsne import models, schema, storage
from gridtsne.storage import filesystem
from gridtsne.decode import DecodeConfig
from gridtsne.pooling import POOLINGS, resolve_pooling
from gridtsne.flagfiles import expand_flags_files
from pipelines import watch
from pipelines.beam_runner import new_pipeline
from pipelines.options import (add_flag, input_policy_from, local_abs, refuse_empty_values,
                               storage_options_from)
from transforms import embed_counters as C
from transforms.embed import DECODERS, EmbedConfig, EmbedImages, resolve_decoder
from transforms.listing import ListFiles
from transforms.progress_metrics import counter_values
from transforms.write import WriteTable

log = logging.getLogger(__name__)

PART = "part"


class EmbedOptions(PipelineOptions):
    """Flags of the embedding stage; everything else passes to Beam untouched."""

    @classmethod
    def _add_argparse_args(cls, parser):
        defaults = DecodeConfig()
        add_flag(parser, "--input", action="append", default=None,
                 help="fsspec URL, glob (** = any depth) or directory of images; repeatable")
        add_flag(parser, "--manifest", action="append", default=None,
                 help="URL of a text file listing one image URL (or glob) per line; repeatable")
        add_flag(parser, "--output", default=None,
                 help="URL under which vectors/ and errors/ are written")
        add_flag(parser, "--model", default=models.DEFAULT_MODEL,
                 help=f"one of {models.model_names()} or 'package.module:SPEC'")
        add_flag(parser, "--weights", default=None,
                 help="path or URL of a state dict to use instead of the model's default weights")
        add_flag(parser, "--batch_size", type=int, default=32, help="images per forward pass")
        add_flag(parser, "--device", default="auto", choices=models.DEVICES,
                 help="auto: a GPU when the worker has one, else the CPU")
        add_flag(parser, "--thumbnail_size", type=int, default=defaults.thumbnail_size,
                 help="longest side of the stored JPEG thumbnails, in pixels")
        add_flag(parser, "--max_pixels", type=int, default=defaults.max_pixels,
                 help="refuse images that declare more pixels (decompression-bomb guard)")
        add_flag(parser, "--max_bytes", type=int, default=defaults.max_bytes,
                 help="refuse files larger than this many bytes")
        add_flag(parser, "--torch_threads", type=int, default=None,
                 help="torch intra-op threads per worker process (default: torch's choice)")
        add_flag(parser, "--decode_threads", type=int, default=EmbedConfig.decode_threads,
                 help="threads per worker that fetch and decode ahead of the model (Pillow "
                      "path), or that encode thumbnails and decode fallbacks (batched path)")
        add_flag(parser, "--decoder", default=EmbedConfig.decoder, choices=DECODERS,
                 help="batched: JPEGs decoded in batches by torchvision (nvjpeg on CUDA), "
                      "resized on the device; pillow: one image at a time on the CPU; auto: "
                      "batched with --device cuda (or auto on a GPU machine), else pillow")
        add_flag(parser, "--precision", default=EmbedConfig.precision,
                 choices=models.PRECISIONS,
                 help="forward pass precision; auto: bf16 on CUDA, fp32 on the CPU (vectors "
                      "are float32 either way)")
        add_flag(parser, "--pooling", default=EmbedConfig.pooling, choices=POOLINGS,
                 help="how the model's last feature map becomes a vector: gem (generalised "
                      "mean, p=3) or avg; auto: the model's default (gem for "
                      "efficientnet_lite0)")
        add_flag(parser, "--share_model", default="yes", choices=("yes", "no"),
                 help="batched path: one model per worker machine shared by its processes "
                      "(yes) or one per process (no)")
        add_flag(parser, "--read_threads", type=int, default=EmbedConfig.read_threads,
                 help="batched path: threads per process reading files ahead of the device")


@dataclasses.dataclass(frozen=True)
class EmbedJobConfig:
    """A validated embedding job: what :func:`build_pipeline` wires.

    Attributes
    ----------
    inputs, manifests : tuple of str
        Patterns and manifest URLs; at least one of them.
    output : str
        Where ``vectors/`` and ``errors/`` go, unless the prefixes below say otherwise.
    embed : EmbedConfig
    metadata : dict
        The ``vectors/`` schema metadata (model, weights' sha256, preprocessing ...), from
        :func:`describe_job`.
    vectors_prefix, errors_prefix : str
        File prefixes of the written shards (``<prefix>-SSSSS-of-NNNNN.parquet``); default
        ``<output>/vectors/part-<run_id>`` and ``<output>/errors/part-<run_id>``.
    run_id : str
    """

    inputs: tuple = ()
    manifests: tuple = ()
    output: str = None
    embed: EmbedConfig = EmbedConfig()
    metadata: dict = None
    vectors_prefix: str = None
    errors_prefix: str = None
    run_id: str = None

    def __post_init__(self):
        if not self.inputs and not self.manifests:
            raise ValueError("give at least one --input or --manifest")
        run_id = self.run_id or new_run_id()
        object.__setattr__(self, "run_id", run_id)
        for attr, table in (("vectors_prefix", schema.VECTORS_DIR),
                            ("errors_prefix", schema.ERRORS_DIR)):
            if getattr(self, attr) is None:
                if not self.output:
                    raise ValueError(f"give --output (or {attr})")
                object.__setattr__(self, attr, storage.url_join(
                    self.output, table, f"{PART}-{run_id}"))

    @property
    def vectors_schema(self):
        meta = self.metadata if self.metadata is not None else describe_job(self.embed)
        return schema.vectors_schema(meta["vector_dim"], meta)


@dataclasses.dataclass(frozen=True)
class EmbedOutputs:
    """The PCollections :func:`build_pipeline` creates, for a bigger job to extend."""

    files: beam.PCollection
    vectors: beam.PCollection
    errors: beam.PCollection
    written_vectors: beam.PCollection
    written_errors: beam.PCollection


def new_run_id():
    """A sortable, unique id for the file names of one run."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def describe_job(embed_config):
    """The ``vectors/`` schema metadata of ``embed_config``.

    A wrong ``--model`` or an unreadable ``--weights`` fails here, before any worker starts:
    given weights are checked by building the model once on the CPU; a model's default
    weights are only hashed (:func:`gridtsne.models.identify_weights`), so launching the
    default job imports neither torch nor timm.
    """
    spec = models.get_spec(embed_config.model)
    pooling = resolve_pooling(embed_config.pooling, spec.poolings, spec.name)
    sha, source = models.identify_weights(spec, embed_config.weights)
    meta = models.describe(spec, sha, source, pooling)
    meta["preprocessing"] = embed_config.decode.describe()
    device = embed_config.device
    if device == "auto":
        device = models.resolve_device("auto")
    decoder = resolve_decoder(embed_config.decoder, device)
    meta["decoder"] = decoder
    if decoder == "batched":
        meta["preprocessing"]["resize"] = (
            f"bicubic with antialiasing on the device, whole image squashed to "
            f"{embed_config.decode.input_size}x{embed_config.decode.input_size}, aspect not "
            f"kept (files the batched decoder refuses: Pillow, as the pillow decoder)")
    meta["precision"] = models.resolve_precision(embed_config.precision, embed_config.device)
    meta["device"] = embed_config.device
    return meta


def build_pipeline(p, config):
    """Wire the embedding stage into ``p``.

    Every listed file is embedded: re-using a previous version's rows is the whole job's
    business (``pipelines/run.py``, :class:`transforms.reindex.ClassifyFiles`).

    Parameters
    ----------
    p : apache_beam.Pipeline
    config : EmbedJobConfig

    Returns
    -------
    EmbedOutputs
    """
    emb = config.embed
    files, list_errors = p | "ListFiles" >> ListFiles(config.inputs, config.manifests,
                                                      emb.storage_options, emb.input_policy)
    vectors, embed_errors = files | "EmbedImages" >> EmbedImages(emb)
    errors = (list_errors, embed_errors) | "FlattenErrors" >> beam.Flatten()
    written_vectors = vectors | "WriteVectors" >> WriteTable(
        config.vectors_prefix, config.vectors_schema, emb.storage_options)
    written_errors = errors | "WriteErrors" >> WriteTable(
        config.errors_prefix, schema.ERRORS_SCHEMA, emb.storage_options)
    return EmbedOutputs(files, vectors, errors, written_vectors, written_errors)


def config_from_options(options):
    """Validate the flags and turn them into an :class:`EmbedJobConfig` (with metadata)."""
    o = options.view_as(EmbedOptions)
    if not o.input and not o.manifest:
        raise ValueError("give at least one --input or --manifest")
    for flag, values in (("--input", o.input), ("--manifest", o.manifest)):
        if any(not str(v).strip() for v in values or ()):
            raise ValueError(f"{flag} is empty (an unset shell variable?): give a URL or a "
                             f"path; an empty one would map the working directory")
    if not o.output:
        raise ValueError("--output is required")
    output = local_abs(o.output)
    decode = DecodeConfig(input_size=models.get_spec(o.model).input_size,
                          thumbnail_size=o.thumbnail_size, max_pixels=o.max_pixels,
                          max_bytes=o.max_bytes)
    storage_options = storage_options_from(options)
    # The weights travel with the job's storage options: workers open them as the launcher.
    embed = EmbedConfig(model=o.model, weights=models.weights_file(o.weights, storage_options),
                        device=o.device, batch_size=o.batch_size, decode=decode,
                        storage_options=storage_options,
                        input_policy=input_policy_from(options),
                        torch_threads=o.torch_threads, decode_threads=o.decode_threads,
                        decoder=o.decoder, precision=o.precision, pooling=o.pooling,
                        share_model=o.share_model == "yes", read_threads=o.read_threads)
    metadata = describe_job(embed)
    embed = dataclasses.replace(embed, weights_sha256=metadata["weights_sha256"])
    return EmbedJobConfig(inputs=tuple(o.input or ()), manifests=tuple(o.manifest or ()),
                          output=output, embed=embed, metadata=metadata)


def counters(result):
    """The stage's Beam counters after a run, ``{name: value}``; None when the runner reports
    no metrics (some runners have none), which the callers must say rather than read as 0."""
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(C.NAMESPACE))
    except Exception as exc:  # some runners report no metrics
        log.warning("no metrics from the runner: %s", exc)
        return None
    values = counter_values(found)
    if not values:
        log.warning("the runner reported no counters of %s", C.NAMESPACE)
        return None
    return {name: value for (_, name), value in values.items()}


def _rows_written(prefix, storage_options):
    fs, base = filesystem(prefix, storage_options)
    files = sorted(fs.glob(base + "-*.parquet"))
    rows = 0
    for f in files:
        with fs.open(f, "rb") as fh:
            rows += pq.ParquetFile(fh).metadata.num_rows
    return rows, files


def _remove_previous_parts(prefix, storage_options):
    """Delete the other runs' shards beside ``prefix`` (a re-run replaces the table)."""
    fs, base = filesystem(prefix, storage_options)
    folder = base.rsplit("/", 1)[0]
    if not fs.exists(folder):
        return
    for f in fs.ls(folder, detail=False):
        name = f.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and not f.startswith(base + "-"):
            fs.rm(f)


NO_METRICS = ("unavailable: the runner reported no metrics, so the check that every image "
              "found is in vectors/ or errors/ could not run")


def summarize(config, result):
    """Counts read back from the output, checked against the counters; prints and returns them.

    The figures only the counters know (images found, listing errors, files skipped) are
    None when the runner reports no metrics; the summary's ``rows_check`` and the printed
    text then say that the lost-rows check could not run, instead of passing it silently.

    Raises
    ------
    RuntimeError
        When images found (plus listing failures) differ from vectors + errors written: an
        image got lost, which must never pass silently.
    """
    counts = counters(result)
    opts = config.embed.storage_options
    n_vectors, _ = _rows_written(config.vectors_prefix, opts)
    n_errors, _ = _rows_written(config.errors_prefix, opts)

    def count(name):
        return None if counts is None else counts.get(name, 0)

    summary = {
        "images_found": count(C.IMAGES_FOUND), "listing_errors": count(C.LISTING_ERRORS),
        "vectors": n_vectors, "errors": n_errors,
        "skipped_not_images": count(C.NOT_IMAGES), "skipped_hidden": count(C.HIDDEN_SKIPPED),
        "vectors_prefix": config.vectors_prefix, "errors_prefix": config.errors_prefix,
        "run_id": config.run_id,
        "rows_check": "passed" if counts is not None else NO_METRICS,
    }
    if counts is None:
        found = (f"{n_vectors} vectors, {n_errors} errors; images found, files skipped: "
                 f"{NO_METRICS}")
        log.warning("embed: %s", NO_METRICS)
    else:
        found = (f"{summary['images_found']} images found, {n_vectors} vectors, {n_errors} "
                 f"errors ({summary['listing_errors']} inputs that could not be listed), "
                 f"{summary['skipped_not_images']} other files skipped, "
                 f"{summary['skipped_hidden']} hidden files skipped")
    print(f"embed: {found}\n"
          f"  vectors: {config.vectors_prefix}-*.parquet\n"
          f"  errors:  {config.errors_prefix}-*.parquet")
    if counts is not None:
        expected = summary["images_found"] + summary["listing_errors"]
        if expected != n_vectors + n_errors:
            raise RuntimeError(f"images found ({summary['images_found']}) + listing "
                               f"errors ({summary['listing_errors']}) != vectors "
                               f"({n_vectors}) + errors ({n_errors}): rows were lost")
    return summary


def print_help():
    """The stage's own flags; Beam's flags (``--runner`` ...) are documented by Beam."""
    parser = argparse.ArgumentParser(
        prog="gridtsne embed", description=__doc__.split("\n\n")[0],
        epilog="Any other flag goes to Apache Beam untouched (--runner, --direct_num_workers, "
               "--s3_endpoint_url, --flags_file configs/NAME.flags ...). See docs/embed.md.")
    EmbedOptions._add_argparse_args(parser)
    parser.print_help()


def run(argv=None):
    """Parse ``argv``, run the stage, print and return the summary dict."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-h" in argv or "--help" in argv:
        print_help()
        return 0
    refuse_empty_values(argv)
    argv = expand_flags_files(argv)
    options = PipelineOptions(argv)
    config = config_from_options(options)
    p = new_pipeline(options)
    build_pipeline(p, config)
    with watch.watching(options) as w:
        result = w.run(p)
    # Check the new table first: a run that lost rows keeps the previous table.
    summary = summarize(config, result)
    for prefix in (config.vectors_prefix, config.errors_prefix):
        _remove_previous_parts(prefix, config.embed.storage_options)
    return summary


if __name__ == "__main__":
    run()
