"""The per-file work of the embedding stage: fetch a listed file, recognise it, decode it.

Kept apart from Beam so that the pipeline's DoFn and the benchmark's plain loop run exactly the
same code.
"""
import dataclasses
import hashlib
import logging

from gridtsne.decode import STAGE_READ, DecodeConfig, DecodeError, decode_image
from gridtsne.failures import is_machine_failure
from gridtsne.input_policy import refused_message
from gridtsne.refusals import Refused, refusal_in
from gridtsne.storage import filesystem
from gridtsne.sniff import HEADER_BYTES, has_image_extension, image_format

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """Everything ``vectors/`` stores about one image except its vector.

    Travels as the key beside the pixels through RunInference, so the row can be built once
    the vector comes back.
    """

    uri: str
    sha256: str
    bytes: int
    mtime_us: int
    width: int
    height: int
    thumbnail: bytes


def is_candidate(info):
    """Whether ``info`` counts as an image before its content is seen (named or image-named)."""
    return info.explicit or has_image_extension(info.uri)


def fetch(info, max_bytes, storage_options=None, policy=None):
    """The bytes of a listed file, or None when its content shows it is not an image.

    Under an :class:`~gridtsne.input_policy.InputPolicy` the file is checked once more just
    before its first byte is read (a local one by where its symlinks lead now), and web reads
    go through connections that check their address and every redirect.

    A file that is neither named explicitly nor has an image extension is first sniffed with a
    ranged read of its first :data:`~gridtsne.sniff.HEADER_BYTES` bytes and skipped when they
    match no image signature, so a folder of videos is not downloaded to be skipped.

    Raises
    ------
    DecodeError
        ``stage="read"`` when the file cannot be opened or read, exceeds ``max_bytes``
        (checked against the listed size first, so an oversized file is never fetched), or
        ``policy`` refuses it (``Refused``; nothing of it is read).
    Exception
        Unchanged, when the failure is the machine's (storage or network down, out of
        memory: :func:`gridtsne.failures.is_machine_failure`), so the bundle is retried.
    """
    if policy is not None:
        try:
            storage_options = policy.guard(info.uri, storage_options)
        except Refused as err:
            raise DecodeError(STAGE_READ, "Refused", refused_message(err.why)) from None
    candidate = is_candidate(info)
    if candidate and info.size is not None and info.size > max_bytes:
        raise too_large(info.size, max_bytes)
    try:
        fs, path = filesystem(info.uri, storage_options)
        if not candidate:
            # A ranged read of the signature alone: opening the file would fetch a whole
            # read-ahead block (5 MB on object stores) of what is probably a video.
            if image_format(fs.cat_file(path, start=0, end=HEADER_BYTES)) is None:
                return None
            if info.size is not None and info.size > max_bytes:
                raise too_large(info.size, max_bytes)
        with fs.open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except DecodeError:
        raise
    except Exception as exc:
        why = refusal_in(exc)  # a redirect or an address the policy refused
        if why:
            raise DecodeError(STAGE_READ, "Refused", refused_message(why)) from exc
        if is_machine_failure(exc):  # storage or network down: not this file's fault
            raise
        raise DecodeError.from_exception(STAGE_READ, exc) from exc
    if len(data) > max_bytes:
        raise too_large(f"more than {max_bytes:,}", max_bytes)
    return data


def too_large(size, max_bytes):
    """The ``read`` error of a file of ``size`` bytes (or a description) over ``max_bytes``."""
    size = f"{size:,}" if isinstance(size, int) else size
    return DecodeError(STAGE_READ, "FileTooLarge",
                       f"{size} bytes is more than max_bytes={max_bytes:,}")


def read_and_decode(info, config=DecodeConfig(), storage_options=None, policy=None):
    """Fetch and decode one listed file.

    Returns
    -------
    tuple of (ImageRecord, numpy.ndarray) or None
        The record and the ``(input_size, input_size, 3)`` uint8 pixels; None for a file that
        is not an image (skipped, not an error).

    Raises
    ------
    DecodeError
        Whatever makes an image unusable; the caller turns it into an ``errors/`` row.
    """
    data = fetch(info, config.max_bytes, storage_options, policy)
    if data is None:
        return None
    decoded = decode_image(data, config)
    record = ImageRecord(uri=info.uri, sha256=hashlib.sha256(data).hexdigest(),
                         bytes=len(data), mtime_us=info.mtime_us, width=decoded.width,
                         height=decoded.height, thumbnail=decoded.thumbnail)
    return record, decoded.pixels
