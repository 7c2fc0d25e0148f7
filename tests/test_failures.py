"""One file's problem is its error row; the machine's problem fails the bundle (docs/deploy.md)."""
import errno
import socket

import pytest

from gridtsne.decode import DecodeError
from gridtsne.failures import is_lost_connection, is_machine_failure
from gridtsne.ingest import fetch
from gridtsne.listing import FileInfo


class OutOfMemoryError(RuntimeError):  # named as torch.cuda names it
    pass


class EndpointConnectionError(Exception):  # named as botocore names it
    pass


@pytest.mark.parametrize("exc", [
    MemoryError(), ConnectionResetError(), BrokenPipeError(), TimeoutError(), EOFError(),
    OSError(errno.ENOSPC, "No space left on device"), OSError(errno.EIO, "I/O error"),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    OutOfMemoryError("boom"), EndpointConnectionError("Could not connect"),
])
def test_machine_failures(exc):
    assert is_machine_failure(exc)


@pytest.mark.parametrize("exc", [
    FileNotFoundError(errno.ENOENT, "gone"), PermissionError(errno.EACCES, "denied"),
    IsADirectoryError(), ValueError("bad header"), RuntimeError("a bug"), KeyError("x"),
    DecodeError("decode", "UnidentifiedImageError", "not an image"),
])
def test_one_files_failures(exc):
    assert not is_machine_failure(exc)


def test_the_cause_counts():
    try:
        try:
            raise ConnectionResetError("peer reset")
        except ConnectionResetError as inner:
            raise ValueError("read failed") from inner
    except ValueError as outer:
        assert is_machine_failure(outer)
    assert is_lost_connection(EOFError()) and not is_lost_connection(MemoryError())


def test_fetch_gives_a_row_for_a_missing_file_and_raises_when_storage_is_down(tmp_path):
    with pytest.raises(DecodeError) as gone:
        fetch(FileInfo(str(tmp_path / "gone.jpg"), 10, 1, explicit=True), 1 << 20)
    assert gone.value.stage == "read" and gone.value.error_type == "FileNotFoundError"
    # A real HTTP store that is not there (a closed port on loopback): not the file's fault.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/photos/a.jpg"
    with pytest.raises(Exception) as down:
        fetch(FileInfo(url, 10, 1, explicit=True), 1 << 20)
    assert not isinstance(down.value, DecodeError) and is_machine_failure(down.value)
