"""The batched embedding path: a batch of listed files -> vectors and errors, one call each.

Two halves, so that a machine can run one model for many worker processes:

* :func:`~gridtsne.batch_fetch.start_fetch` (in each worker process): reads the files' bytes
  (local files with plain reads on threads, object stores in one concurrent call) and hashes
  them;
* :class:`BatchEmbedder` (one per machine when shared): decodes the bytes as one batch on the
  device (:mod:`gridtsne.batch_decode`), runs the model and returns per file the upright size,
  the thumbnail and the vector, or the error.

What crosses between the two is bytes in and vectors plus thumbnails out, a few kilobytes per
image, never device tensors. Beam-free: ``transforms/embed.py`` wires it.
"""
import dataclasses
import hashlib
import logging
import os
import threading

from gridtsne import models
from gridtsne.batch_decode import decode_batch, thread_pool
from gridtsne.decode import DecodeConfig, DecodeError
from gridtsne.ingest import ImageRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EmbedderConfig:
    """What builds a :class:`BatchEmbedder`; also its identity when shared across processes."""

    model: str = models.DEFAULT_MODEL
    weights: str = None
    weights_sha256: str = None
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    torch_threads: int = None
    threads: int = 4  # Pillow fallbacks and thumbnail encoding
    decode: DecodeConfig = DecodeConfig()
    device_calls: int = 2  # batches on the device at once (one decodes while one finishes)
    pooling: str = "auto"

    def key(self):
        """A short digest naming this configuration (the tag of a machine-wide shared model)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


class BatchEmbedder:
    """Decodes batches of file bytes on the model's device and embeds them.

    Thread-safe: calls from several threads (the processes of a machine, through a shared
    proxy) run concurrently; the device serialises the kernels, the thread pool is shared.
    """

    def __init__(self, config):
        import torch

        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.config = config
        self.model = models.load_model(config.model, config.weights, config.device,
                                       config.channels_last, precision=config.precision,
                                       pooling=config.pooling)
        models.check_weights(self.model, config.weights_sha256)
        self._pool = thread_pool(config.threads)
        # Calls from many processes: bound the device memory they hold at once; with two
        # slots one call's thumbnail encoding overlaps the other's device work.
        self._device_slots = threading.BoundedSemaphore(config.device_calls)

    def pid(self):
        """The process that holds the model (the same for every process sharing it)."""
        return os.getpid()

    def describe(self):
        return {"device": str(self.model.device), "precision": self.model.precision,
                "pid": os.getpid()}

    def embed(self, datas):
        """Per file's bytes: ``(width, height, thumbnail, vector)`` or a :class:`DecodeError`.

        A file the batched decoder refuses is decoded alone by Pillow. A failing forward pass
        raises: it fails for the machine (device, memory, model), never for one file, so the
        caller's bundle fails and is retried instead of recording good images as bad
        (:mod:`gridtsne.failures`).
        """
        with self._device_slots:
            decoded = decode_batch(datas, self.config.decode, self.model.device, self._pool)
            out = list(decoded.outcomes)
            if not decoded.rows:
                return out
            try:
                vectors = models.embed_tensor(self.model, decoded.pixels)
            finally:
                decoded.pixels = None  # the device memory goes back before the next call
        for i, vector in zip(decoded.rows, vectors):
            meta = out[i]
            out[i] = (meta.width, meta.height, meta.thumbnail, vector)
        return out

    def close(self):
        """Stop the thread pool and let go of the model (its device memory with it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.model = None


def embed_fetched(embedder, fetched):
    """Embed a batch of :class:`Fetched`.

    Returns
    -------
    list of (Fetched, ImageRecord or None, vector or DecodeError or None)
        Per input: the record and vector of an image, ``(None, error)`` for an unusable one,
        ``(None, None)`` for a file that is not an image.
    """
    readable = [f for f in fetched if f.data is not None]
    results = iter(embedder.embed([f.data for f in readable]) if readable else [])
    out = []
    for f in fetched:
        if f.error is not None or f.data is None:
            out.append((f, None, f.error))
            continue
        result = next(results)
        if isinstance(result, DecodeError):
            out.append((f, None, result))
            continue
        width, height, thumbnail, vector = result
        record = ImageRecord(uri=f.info.uri, sha256=f.sha256, bytes=len(f.data),
                             mtime_us=f.info.mtime_us, width=int(width), height=int(height),
                             thumbnail=thumbnail)
        out.append((f, record, vector))
    return out
