"""Files that users name: written atomically, read bounded, never a hang or a clobbered device.

**Writes** (:func:`write_atomic`) go where the path leads, by what is there:

==============================  ============================================================
at the path                     what happens
==============================  ============================================================
nothing, or a regular file      a temp file in the same folder, fsync, ``os.replace``: readers
                                see the old or the new content, never half of it
a symlink                       the file it points to is replaced (the link stays a link)
a character device or a FIFO    written into, as the shell's ``>`` would: ``/dev/null``
                                discards, ``/dev/full`` fails with "no space left on the
                                device"; a FIFO that no process reads is refused, not waited on
a block device, socket, folder  refused with one line (a disk is never written by an export)
==============================  ============================================================

A new file gets mode ``0o666 & ~umask`` (what ``open`` gives); a replaced regular file keeps
its permission bits.

**Reads** (:func:`read_regular`, :func:`read_text`) accept regular files only (a FIFO or a
device is one line, never a hang or an endless read) and at most ``limit`` bytes, checked
before the file is read and again while reading (a file that grows meanwhile).
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import secrets
import stat
from pathlib import Path

from midl_autok.errors import UserError

__all__ = ["cache_dir", "open_regular", "read_regular", "read_text", "write_atomic"]

_Path = str | os.PathLike[str]  # what every function here takes as a path


def cache_dir() -> Path:
    """The package's cache folder (generated data sets, the template MLflow database):
    ``$MIDL_AUTOK_CACHE``, else ``$XDG_CACHE_HOME/midl_autok``, else ``~/.cache/midl_autok``."""
    if os.environ.get("MIDL_AUTOK_CACHE"):
        return Path(os.environ["MIDL_AUTOK_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "midl_autok"


_READ_CHUNK = 1 << 20


def _kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(source: str, mode: int, what: str) -> str:
    return f"{source} is {_kind(mode)}, not a regular file; give the path of the {what}"


# --------------------------------------------------------------------------- writes


def write_atomic(path: _Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8) to ``path``; see the module docstring for what is where.

    Raises:
        UserError: the path is a block device, a socket, a folder, a symlink loop, or a FIFO
            that no process reads.
        OSError: the machine's failures (a full disk, no permission), with the file name.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    target = Path(path)
    real = Path(os.path.realpath(target))  # a symlink: write the file it points to
    try:
        mode: int | None = os.stat(real).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"cannot write {target}: a loop of symbolic links") from None
        raise
    if mode is None or stat.S_ISREG(mode):
        _replace(real, payload, None if mode is None else stat.S_IMODE(mode))
    elif stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        _write_into(real, payload, fifo=stat.S_ISFIFO(mode), shown=target)
    else:
        raise UserError(
            f"cannot write {target}: it is {_kind(mode)}; give the path of a regular file"
        )


def _replace(target: Path, payload: bytes, keep_mode: int | None) -> None:
    """Temp file in the same folder (created 0o666 & ~umask), fsync, ``os.replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            if keep_mode is not None:
                os.fchmod(fh.fileno(), keep_mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_into(target: Path, payload: bytes, *, fifo: bool, shown: Path) -> None:
    """Write into a character device or a FIFO, as ``>`` does; never wait for a reader."""
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY | (os.O_NONBLOCK if fifo else 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if fifo and exc.errno == errno.ENXIO:
            raise UserError(
                f"cannot write {shown}: it is a FIFO (named pipe) that no process reads; "
                "start the reader first"
            ) from None
        raise OSError(exc.errno, exc.strerror, str(shown)) from None
    try:
        if fifo:  # the reader is there: block on a full pipe from here on
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(shown)) from None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reads


def open_regular(
    path: _Path, *, limit: int, what: str = "file", error: type[UserError] = UserError
) -> io.FileIO:
    """Open the regular file ``path`` for reading (unbuffered bytes), refusing anything else.

    Errors (``error``, one line): "{what} not found: PATH", "{what} path is a directory, not a
    file: PATH", "PATH is a FIFO (named pipe), not a regular file; give the path of the {what}",
    "PATH: file is larger than LIMIT bytes", "cannot read {what} PATH: reason".
    """
    source = str(path)
    try:
        mode = os.stat(path).st_mode  # refuse special files before opening them
        if stat.S_ISDIR(mode):
            raise error(f"{what} path is a directory, not a file: {source}")
        if not stat.S_ISREG(mode):
            raise error(_not_regular(source, mode, what))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise error(f"{what} not found: {source}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {source}: {exc.strerror}") from None
    handle = io.FileIO(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > limit:  # swapped since the stat, or big
        handle.close()
        if st.st_size > limit:
            raise error(f"{source}: file is larger than {limit} bytes")
        raise error(_not_regular(source, st.st_mode, what))
    return handle


def read_regular(
    path: _Path, *, limit: int, what: str = "file", error: type[UserError] = UserError
) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (checked before
    reading and while reading: a file that grows meanwhile); errors as :func:`open_regular`."""
    with open_regular(path, limit=limit, what=what, error=error) as fh:
        chunks: list[bytes] = []
        total = 0
        try:
            while chunk := fh.read(min(_READ_CHUNK, limit + 1 - total)):
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise error(f"{path}: file is larger than {limit} bytes")
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    return b"".join(chunks)


def read_text(
    path: _Path, *, limit: int, what: str = "file", error: type[UserError] = UserError
) -> str:
    """:func:`read_regular` decoded as UTF-8; "PATH: not a UTF-8 text file" otherwise."""
    raw = read_regular(path, limit=limit, what=what, error=error)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a UTF-8 text file") from None
