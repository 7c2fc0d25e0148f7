"""Rows of the ``vectors/`` and ``errors/`` tables (see :mod:`gridtsne.schema`) as plain dicts."""
import datetime

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def vector_row(record, vector):
    """The ``vectors/`` row of an :class:`~gridtsne.ingest.ImageRecord` and its vector."""
    mtime = None if record.mtime_us is None else \
        _EPOCH + datetime.timedelta(microseconds=record.mtime_us)
    return {"uri": record.uri, "sha256": record.sha256, "bytes": int(record.bytes),
            "mtime": mtime, "width": int(record.width), "height": int(record.height),
            "thumbnail": record.thumbnail, "vector": vector}


def error_row(uri, stage, error_type, message):
    """The ``errors/`` row of an input that could not be used."""
    return {"uri": str(uri), "stage": str(stage), "error_type": str(error_type),
            "message": str(message)}


def error_row_from(uri, error):
    """The ``errors/`` row of a :class:`~gridtsne.decode.DecodeError`."""
    return error_row(uri, error.stage, error.error_type, error.message)
