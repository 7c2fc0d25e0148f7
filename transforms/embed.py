"""Beam side of the embedding stage: file infos in, ``vectors/`` rows and ``errors/`` rows out.

Two paths, chosen by ``EmbedConfig.decoder`` (see :func:`resolve_decoder`):

* ``pillow``: ``ReadAndDecodeFn`` (gridtsne.ingest, one image per element) -> ``RunInference``
  with a keyed :class:`~transforms.embed_inference.EmbeddingModelHandler` (gridtsne.models)
  -> rows (gridtsne.rows);
* ``batched``: ``BatchElements`` -> :class:`BatchEmbedFn`, one element per batch of files:
  bytes read ahead by threads, decoded and resized as a batch on the device
  (gridtsne.batch_embed), the model shared by the worker machine's processes.

Either way every file that is an image leaves as exactly one vector row or one error row, or
the bundle fails: a problem with one file is its error row, a problem with the machine (model,
device, memory, storage) is raised so the runner retries the bundle (gridtsne.failures).
"""
import collections
import concurrent.futures
import dataclasses
import functools
import logging
import time
import uuid

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue

from gridtsne import faults, models
from gridtsne.batch_embed import BatchEmbedder, EmbedderConfig, embed_fetched
from gridtsne.batch_fetch import start_fetch
from gridtsne.decode import STAGE_DECODE, STAGE_EMBED, DecodeConfig, DecodeError
from gridtsne.failures import is_lost_connection, is_machine_failure
from gridtsne.ingest import read_and_decode
from gridtsne.pooling import POOLINGS
from gridtsne.rows import error_row, error_row_from, vector_row
from transforms import embed_counters as C

log = logging.getLogger(__name__)

ERRORS = "errors"
FIRST_BATCH = "gridtsne.embed.first_batch"  # logged once per BatchEmbedFn instance
DECODERS = ("auto", "pillow", "batched")


@dataclasses.dataclass(frozen=True)
class EmbedConfig:
    """What the embedding DoFns need, and nothing else (not the PipelineOptions).

    Attributes
    ----------
    model : str
        Registry name (:func:`gridtsne.models.model_names`) or ``"module:ATTRIBUTE"``.
    weights : str or None
        Path or URL of a state dict replacing the model's default weights.
    weights_sha256 : str or None
        When set, workers refuse weights whose digest differs (what the launcher recorded in
        the schema metadata is then what the vectors were computed with).
    device : {"auto", "cpu", "cuda"}
        Resolved on the worker, where the GPU is (or is not).
    batch_size : int
        Images per forward pass.
    decode : DecodeConfig
    storage_options : dict
        Per-protocol fsspec options (``{"s3": {"endpoint_url": ...}}``).
    input_policy : gridtsne.input_policy.InputPolicy or None
        Checked again just before each file's bytes are read (``--allow_input``); None: any.
    channels_last : bool
    torch_threads : int or None
        ``torch.set_num_threads`` in each worker process; None keeps torch's default.
    decode_threads : int
        Threads per DoFn instance that fetch and decode ahead of the model (1: inline).
    decoder : {"auto", "pillow", "batched"}
        ``batched``: torchvision's batched JPEG decoder (nvjpeg on CUDA) and resizing on the
        device; ``pillow``: one image at a time on the CPU; ``auto``: batched when the worker
        has CUDA, else Pillow.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Of the forward pass (:func:`gridtsne.models.resolve_precision`).
    pooling : {"auto", "avg", "gem"}
        Of the model's last feature map (:mod:`gridtsne.pooling`); auto: the model's default.
    share_model : bool
        Batched path: one model per worker machine, served to its processes
        (``apache_beam.utils.multi_process_shared``); False: one per process.
    read_threads : int
        Batched path: threads per process that read files' bytes ahead of the device.
    """

    model: str = models.DEFAULT_MODEL
    weights: str = None
    weights_sha256: str = None
    device: str = "auto"
    batch_size: int = 32
    decode: DecodeConfig = DecodeConfig()
    storage_options: dict = dataclasses.field(default_factory=dict)
    input_policy: object = None
    channels_last: bool = True
    torch_threads: int = None
    decode_threads: int = 4
    decoder: str = "auto"
    precision: str = "auto"
    pooling: str = "auto"
    share_model: bool = True
    read_threads: int = 16

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.device not in models.DEVICES:
            raise ValueError(f"device must be one of {models.DEVICES}, got {self.device!r}")
        if self.torch_threads is not None and self.torch_threads <= 0:
            raise ValueError(f"torch_threads must be positive, got {self.torch_threads!r}")
        if not isinstance(self.decode_threads, int) or self.decode_threads < 1:
            raise ValueError(f"decode_threads must be at least 1, got {self.decode_threads!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        models.resolve_precision(self.precision, self.device)
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not isinstance(self.read_threads, int) or self.read_threads < 1:
            raise ValueError(f"read_threads must be at least 1, got {self.read_threads!r}")

    def embedder_config(self):
        """The :class:`~gridtsne.batch_embed.EmbedderConfig` of the batched path."""
        return EmbedderConfig(model=self.model, weights=self.weights,
                              weights_sha256=self.weights_sha256, device=self.device,
                              precision=self.precision, channels_last=self.channels_last,
                              torch_threads=self.torch_threads, threads=self.decode_threads,
                              decode=self.decode, pooling=self.pooling)


def resolve_decoder(decoder, device):
    """``"auto"`` -> ``"batched"`` on a CUDA device, else ``"pillow"`` (``device`` resolved)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    if decoder != "auto":
        return decoder
    return "batched" if device == "cuda" else "pillow"


def _read_and_decode_outcome(info, decode_config, storage_options, policy=None):
    """``(kind, value, msec)`` for one file, never raising (runs in a worker thread)."""
    start = time.perf_counter()
    try:
        result = read_and_decode(info, decode_config, storage_options, policy)
    except DecodeError as exc:
        return "error", error_row_from(info.uri, exc), 0
    except Exception as exc:  # a bug or an exotic failure still must not lose the file
        if is_machine_failure(exc):  # the machine's: the bundle fails and is retried
            raise
        log.exception("unexpected failure decoding %s", info.uri)
        return "error", error_row(info.uri, STAGE_DECODE, type(exc).__name__,
                                  str(exc) or repr(exc)), 0
    if result is None:
        return "skipped", None, 0
    return "image", result, int((time.perf_counter() - start) * 1000)


class ReadAndDecodeFn(beam.DoFn):
    """A file info -> ``(ImageRecord, pixels)``; unusable images go to the ``errors`` output.

    Files whose content is not an image (and that were neither named explicitly nor carry an
    image extension) are dropped and counted as ``files_skipped_not_images``.

    With ``threads > 1`` files are fetched and decoded by a small thread pool, up to
    ``in_flight`` ahead of what has been emitted: while the model runs on one batch further
    down the fused stage, the next batch is being read and decoded (Pillow and fsspec release
    the GIL), and object-store latency is paid in parallel. Outputs keep the input order and
    each keeps its own element's window and timestamp; counters are updated on the bundle's
    thread, where Beam collects them.
    """

    def __init__(self, decode_config, storage_options=None, threads=1, in_flight=None,
                 policy=None):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads!r}")
        self._config = decode_config
        self._storage_options = dict(storage_options or {})
        self._policy = policy
        self._threads = threads
        self._in_flight = max(in_flight or 0, 2 * threads)
        self._pool = None
        self._pending = collections.deque()
        self._found = C.counter(C.IMAGES_FOUND)
        self._skipped = C.counter(C.NOT_IMAGES)
        self._errors = C.counter(C.DECODE_ERRORS)
        self._bytes = C.counter(C.BYTES_READ)
        self._msec = C.distribution(C.DECODE_MSEC)

    def setup(self):
        if self._threads > 1:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self._threads, thread_name_prefix="ReadAndDecode")

    def start_bundle(self):
        self._pending = collections.deque()

    def process(self, info, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        if self._pool is None:
            outcome = _read_and_decode_outcome(info, self._config, self._storage_options,
                                               self._policy)
            yield from self._emit(outcome, None)
            return
        future = self._pool.submit(_read_and_decode_outcome, info, self._config,
                                   self._storage_options, self._policy)
        self._pending.append((future, timestamp, window))
        while len(self._pending) > self._in_flight:
            yield from self._emit_oldest()

    def finish_bundle(self):
        while self._pending:
            yield from self._emit_oldest()

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _emit_oldest(self):
        future, timestamp, window = self._pending.popleft()
        yield from self._emit(future.result(), (timestamp, window))

    def _emit(self, outcome, where):
        kind, value, msec = outcome
        if kind == "skipped":
            self._skipped.inc()
            return
        self._found.inc()
        if kind == "error":
            self._errors.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, _windowed(value, where))
            return
        self._bytes.inc(value[0].bytes)
        self._msec.update(msec)
        yield _windowed(value, where)


def _windowed(value, where):
    if where is None:
        return value
    timestamp, window = where
    return WindowedValue(value, timestamp, [window])


class _ToVectorRowFn(beam.DoFn):
    def __init__(self):
        self._vectors = C.counter(C.VECTORS)

    def process(self, keyed):
        record, vector = keyed
        faults.point("embedding")
        self._vectors.inc()
        yield vector_row(record, vector)


class EmbedImages(beam.PTransform):
    """File infos -> ``(vector rows, error rows)``, both dicts matching :mod:`gridtsne.schema`.

    The composable heart of the stage: listing, filtering and writing stay outside, so a
    bigger job (the incremental re-index) can feed it any file infos and send its rows
    anywhere. A batch whose inference fails (the model, the device, memory) fails its bundle,
    which the runner retries; it never becomes error rows for images that are fine.
    """

    def __init__(self, config):
        super().__init__()
        self._config = config

    def expand(self, files):
        # A worker resolves "auto" itself; the launcher decides the graph, so "auto" is
        # resolved here from what the device flag says (auto + a GPU here counts as cuda).
        device = self._config.device
        if device == "auto":
            device = models.resolve_device("auto")
        if resolve_decoder(self._config.decoder, device) == "batched":
            return self._expand_batched(files)
        return self._expand_pillow(files)

    def _expand_batched(self, files):
        cfg = self._config
        vectors, errors = (
            files
            | "BatchFiles" >> beam.BatchElements(min_batch_size=cfg.batch_size,
                                                 max_batch_size=cfg.batch_size)
            | "EmbedBatches" >> beam.ParDo(BatchEmbedFn(cfg)).with_outputs(ERRORS,
                                                                           main="vectors"))
        return vectors, errors

    def _expand_pillow(self, files):
        decoded, decode_errors = (
            files
            | "ReadAndDecodeImages" >> beam.ParDo(ReadAndDecodeFn(
                self._config.decode, self._config.storage_options,
                threads=self._config.decode_threads, in_flight=self._config.batch_size,
                policy=self._config.input_policy))
            .with_outputs(ERRORS, main="decoded"))
        # Imported here: apache_beam.ml.inference imports torch, which the batched path's
        # worker processes that only read files never need; transforms.embed_inference (first)
        # imports it without torch, so building this graph does not load torch either.
        from transforms.embed_inference import EmbeddingModelHandler
        from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

        # A failing forward pass fails the bundle (the machine's problem, never one file's).
        embedded = decoded | "RunInference" >> RunInference(
            KeyedModelHandler(EmbeddingModelHandler(self._config)))
        vectors = embedded | "ToVectorRows" >> beam.ParDo(_ToVectorRowFn())
        return vectors, decode_errors


class BatchEmbedFn(beam.DoFn):
    """A batch of file infos -> ``vectors/`` rows; unusable images go to the ``errors`` output.

    Each batch's bytes are read (:func:`~gridtsne.batch_fetch.start_fetch`: local files by a
    thread pool, object stores in one concurrent call) as soon as the batch arrives, while the
    previous batch is decoded and embedded (one batch in flight): reading overlaps the device
    work. The model lives in a :class:`~gridtsne.batch_embed.BatchEmbedder`, by default one per
    worker machine shared by its processes (``share_model``), so the GPU holds one copy.
    """

    def __init__(self, config):
        self._config = config
        self._embedder_config = config.embedder_config()
        # One tag per job: its processes on a machine share the model, and an address file
        # left behind by an earlier job's model server is never tried.
        self._share_tag = f"gridtsne-embedder-{self._embedder_config.key()}-" \
                          f"{uuid.uuid4().hex[:12]}" if config.share_model else None
        self._embedder = None
        self._pool = None
        self._pending = None
        self._first_logged = False
        self._found = C.counter(C.IMAGES_FOUND)
        self._skipped = C.counter(C.NOT_IMAGES)
        self._decode_errors = C.counter(C.DECODE_ERRORS)
        self._embed_errors = C.counter(C.EMBED_ERRORS)
        self._vectors = C.counter(C.VECTORS)
        self._bytes = C.counter(C.BYTES_READ)
        self._batch_msec = C.distribution(C.BATCH_MSEC)

    def setup(self):
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._config.read_threads, thread_name_prefix="ReadBatch")
        self._embedder = acquire_embedder(self._embedder_config, self._share_tag)

    def start_bundle(self):
        self._pending = None

    def process(self, infos, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        reading = start_fetch(infos, self._config.decode.max_bytes,
                              self._config.storage_options, self._pool,
                              policy=self._config.input_policy)
        previous, self._pending = self._pending, (reading, timestamp, window)
        if previous is not None:
            yield from self._embed(previous)

    def finish_bundle(self):
        pending, self._pending = self._pending, None
        if pending is not None:
            yield from self._embed(pending)

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._embedder is not None:
            embedder, self._embedder = self._embedder, None
            release_embedder(embedder, self._embedder_config, self._share_tag)

    def _embed(self, pending):
        reading, timestamp, window = pending
        where = (timestamp, window)
        start = time.perf_counter()
        fetched = reading.result()
        results = self._embed_fetched(fetched)  # raises for the machine: the bundle fails
        faults.point("embedding")
        self._batch_msec.update(int((time.perf_counter() - start) * 1000))
        if not self._first_logged:  # start-up is visible in the job's log
            self._first_logged = True
            log.info("%s: first batch embedded (%d files)", FIRST_BATCH, len(results))
        for f, record, value in results:
            if record is None and value is None:
                self._skipped.inc()
                continue
            self._found.inc()
            if record is None:
                counter = self._embed_errors if value.stage == STAGE_EMBED else \
                    self._decode_errors
                counter.inc()
                yield beam.pvalue.TaggedOutput(
                    ERRORS, _windowed(error_row_from(f.info.uri, value), where))
                continue
            self._bytes.inc(record.bytes)
            self._vectors.inc()
            yield _windowed(vector_row(record, value), where)

    def _embed_fetched(self, fetched):
        """:func:`embed_fetched`, once more on a new handle when the shared model's process
        is gone (the process that asked first, hence holds it, died): the model then comes
        up again in this process or another survivor, instead of failing every batch."""
        try:
            return embed_fetched(self._embedder, fetched)
        except Exception as exc:
            if not (self._share_tag and is_lost_connection(exc)):
                raise
            log.warning("the shared model's process is gone (%r); acquiring it again", exc)
            # The cached handle still points at the dead process's server: start afresh.
            _SHARED.pop(self._share_tag, None)
            self._embedder = acquire_embedder(self._embedder_config, self._share_tag)
            return embed_fetched(self._embedder, fetched)


_SHARED = {}  # share tag -> its MultiProcessShared, which releases what it acquired


def _shared_embedder(config, share_tag):
    from apache_beam.utils.multi_process_shared import MultiProcessShared

    # setdefault: DoFn instances on several threads of a process end with one handle.
    return _SHARED.setdefault(share_tag, MultiProcessShared(
        functools.partial(BatchEmbedder, config), tag=share_tag))


def acquire_embedder(config, share_tag=None):
    """The :class:`BatchEmbedder` of ``config``: this machine's shared one, or a private one.

    Shared (``share_tag`` given, the same in every process of the job): the first process of
    the machine to ask builds it and serves it to the others
    (``apache_beam.utils.multi_process_shared``, a local socket guarded by a file lock, the
    mechanism of RunInference's ``large_model``); calls from other processes send file bytes
    and get vectors and thumbnails back.
    """
    if not share_tag:
        return BatchEmbedder(config)
    return _shared_embedder(config, share_tag).acquire()


def release_embedder(embedder, config, share_tag=None):
    """Give back what :func:`acquire_embedder` returned: a private embedder is closed (its
    threads and model let go); the machine's shared one loses this process's reference, and
    its model is freed once no process holds one."""
    if not share_tag:
        embedder.close()
        return
    try:
        _shared_embedder(config, share_tag).release(embedder)
    except Exception as exc:  # the serving process is gone: nothing is left to release
        log.warning("could not release the shared embedder %s: %s", share_tag, exc)
