"""Tests for midl_autok.fileio: what a write does to what is at the path, and bounded reads.

Devices and FIFOs are made here, in tmp_path (``os.mknod`` needs root; those cases are
skipped with the reason otherwise); nothing under /dev is touched.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midl_autok.errors import ScheduleError, UserError, system_error_message
from midl_autok.fileio import read_regular, read_text, write_atomic

# Linux device numbers of the memory devices: null (1, 3), zero (1, 5), full (1, 7). A block
# device with a major number of the local/experimental range (240): never opened here.
NULL, ZERO, FULL, NO_DISK = (1, 3), (1, 5), (1, 7), (240, 0)


def make_device(path: Path, numbers: tuple[int, int], *, block: bool = False) -> Path:
    kind = stat.S_IFBLK if block else stat.S_IFCHR
    try:
        os.mknod(path, kind | 0o666, os.makedev(*numbers))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    return path


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- regular files


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_follows_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    os.umask(mask)
    write_atomic(tmp_path / "report.html", "<html/>")
    assert mode(tmp_path / "report.html") == expected


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    target = tmp_path / "s.json"
    target.write_text("old")
    target.chmod(0o640)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o640


def test_a_symlink_stays_and_its_target_is_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real" / "s.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, "new")
    assert link.is_symlink()
    assert real.read_text() == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["s.json"]  # no temp file left


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "missing.json")
    write_atomic(link, "new")
    assert link.is_symlink()
    assert (tmp_path / "missing.json").read_text() == "new"


def test_a_symlink_loop_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UserError, match="a loop of symbolic links"):
        write_atomic(tmp_path / "a", "x")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_what_is_written_reads_back(tmp_path: Path, payload: str | bytes) -> None:
    target = tmp_path / "out.bin"
    write_atomic(target, payload)
    expected = payload.encode() if isinstance(payload, str) else payload
    assert read_regular(target, limit=10_000) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


# --------------------------------------------------------------------------- special files


def test_the_null_device_discards_and_stays_a_device(tmp_path: Path) -> None:
    null = make_device(tmp_path / "null", NULL)
    write_atomic(null, "discarded\n")
    assert stat.S_ISCHR(null.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]


def test_the_full_device_fails_with_no_space_left(tmp_path: Path) -> None:
    full = make_device(tmp_path / "full", FULL)
    with pytest.raises(OSError, match="No space left") as info:
        write_atomic(full, "x" * 10)
    assert info.value.errno == errno.ENOSPC
    line = system_error_message(info.value)
    assert line is not None
    assert line.startswith(f"no space left on the device ({full})")
    assert stat.S_ISCHR(full.stat().st_mode)


def test_a_block_device_is_refused_untouched(tmp_path: Path) -> None:
    disk = make_device(tmp_path / "disk", NO_DISK, block=True)
    with pytest.raises(UserError, match=r"disk: it is a block device; give the path of a regular"):
        write_atomic(disk, "x")
    assert stat.S_ISBLK(disk.stat().st_mode)


@pytest.mark.timeout(10)
def test_a_fifo_without_a_reader_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="a FIFO \\(named pipe\\) that no process reads"):
        write_atomic(fifo, "x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


@pytest.mark.timeout(10)
def test_a_fifo_with_a_reader_receives_the_data(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    opened = threading.Event()

    def reader() -> None:  # like `cat pipe`, but open before the writer starts
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        opened.set()
        chunks: list[bytes] = []
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:  # a writer, no data yet
                    chunk = None
                if chunk:
                    chunks.append(chunk)
                elif chunk == b"" and chunks:  # the writer closed
                    break
                else:
                    time.sleep(0.005)
        finally:
            os.close(fd)
        received.append(b"".join(chunks))

    thread = threading.Thread(target=reader)
    thread.start()
    opened.wait(5)
    payload = b"y" * 300_000  # more than a pipe holds: the writer waits for the reader
    write_atomic(fifo, payload)
    thread.join(5)
    assert received == [payload]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_socket_or_a_folder_is_refused(tmp_path: Path) -> None:
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(UserError, match="it is a socket"):
            write_atomic(sock_path, "x")
    with pytest.raises(UserError, match="it is a directory"):
        write_atomic(tmp_path, "x")


# --------------------------------------------------------------------------- reads


@pytest.mark.timeout(10)
def test_reads_refuse_fifos_and_devices_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(
        ScheduleError,
        match=r"pipe is a FIFO \(named pipe\), not a regular file; give the path of the sched",
    ):
        read_text(fifo, limit=100, what="schedule file", error=ScheduleError)
    zero = make_device(tmp_path / "zero", ZERO)
    with pytest.raises(
        UserError,
        match=r"zero is a character device, not a regular file; give the path of the file",
    ):
        read_regular(zero, limit=100)
    link = tmp_path / "link"
    link.symlink_to(zero)
    with pytest.raises(UserError, match="link is a character device, not a regular file"):
        read_regular(link, limit=100)


def test_reads_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 101)
    with pytest.raises(UserError, match=r"big: file is larger than 100 bytes"):
        read_regular(path, limit=100)
    assert read_regular(path, limit=101) == b"x" * 101
    with pytest.raises(UserError, match="file not found"):
        read_regular(tmp_path / "missing", limit=100)
    with pytest.raises(UserError, match="path is a directory, not a file"):
        read_regular(tmp_path, limit=100)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="not a UTF-8 text file"):
        read_text(path, limit=100)
