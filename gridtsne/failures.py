"""Whose problem a failure is: one file's, or the machine's.

The rule (docs/deploy.md, "When something fails"):

* a problem with **one file** (unreadable, not an image, too large, corrupt, gone since it
  was listed, no permission on it) is that file's row in ``errors/``, and the job goes on;
* a problem with **the machine** (the model or its server process, the device, memory,
  storage or the network) is raised: the bundle fails, the runner retries it (Dataflow four
  times, Flink by its restart strategy), and if it keeps failing the job fails. A map is never
  published without those images, and their error rows never claim the files were bad.

:func:`is_machine_failure` tells the two apart for the code that catches exceptions per file
(reading, decoding); a failing forward pass over decoded pixels is always the machine's, since
no single file can cause it. Beam-free.
"""
import errno
import multiprocessing.managers

# Exceptions of these types (or subclasses) are the machine's. ConnectionError covers
# BrokenPipeError, ConnectionRefusedError and ConnectionResetError (a shared model's server
# process that died, an object store that went away).
MACHINE_TYPES = (MemoryError, ConnectionError, TimeoutError, EOFError,
                 multiprocessing.managers.RemoteError)
# Exception class names from libraries not imported here (torch, botocore, aiohttp ...),
# matched anywhere in the exception's class hierarchy.
MACHINE_NAMES = frozenset({
    "OutOfMemoryError",          # torch.cuda.OutOfMemoryError
    "AcceleratorError",          # torch >= 2.8: CUDA errors
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "NoCredentialsError", "ProxyConnectionError",  # botocore
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError",
    "ServerTimeoutError",        # aiohttp (s3fs, gcsfs)
    "TransportError", "RetryError", "ServiceUnavailable",  # google-auth / api-core
})
# errno values of an OSError that describe the machine, not the file.
MACHINE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EIO", "ENOMEM", "EROFS", "EMFILE", "ENFILE", "ENETDOWN",
    "ENETUNREACH", "ENETRESET", "EHOSTUNREACH", "EHOSTDOWN", "ECONNABORTED", "ETIMEDOUT",
    "ESTALE") if hasattr(errno, name))
# Words of a RuntimeError's message that name the device (torch reports CUDA errors so).
MACHINE_WORDS = ("CUDA", "CUBLAS", "cuDNN", "NCCL", "out of memory", "device-side assert",
                 "HIP error")


def _is_machine(exc):
    if isinstance(exc, MACHINE_TYPES):
        return True
    if any(cls.__name__ in MACHINE_NAMES for cls in type(exc).__mro__):
        return True
    if isinstance(exc, OSError) and exc.errno in MACHINE_ERRNOS:
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(word in text for word in MACHINE_WORDS)
    return False


def is_machine_failure(exc):
    """True when ``exc`` (or an exception it was raised from) is a problem of the machine.

    Follows ``__cause__`` and ``__context__``, so a file-looking wrapper around a dropped
    connection still counts as the machine's. Anything else, a bug included, is left to the
    caller's per-file handling.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _is_machine(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_lost_connection(exc):
    """True when ``exc`` says the other end of a connection is gone (a shared model's server
    process that died): a fresh connection may succeed where this one cannot."""
    return isinstance(exc, (ConnectionError, EOFError))
