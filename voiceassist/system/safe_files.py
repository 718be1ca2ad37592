"""Filesystem work for commands run as root in directories the asterisk user can write.

Asterisk's directories (agi-bin, sounds, spool, /var/lib/asterisk, /var/log/asterisk and, on
FreePBX and Debian, /etc/asterisk) belong to the asterisk user, and so does anyone who breaks
into Asterisk, a dialplan or a FreePBX module. A path-based ``open``/``chown``/``rmtree`` run as
root in such a directory follows whatever link that user planted there, into /etc/shadow or
/root. So every object root touches is reached here without following links:

* directories are opened component by component from ``/`` with ``O_NOFOLLOW|O_DIRECTORY``
  (:func:`open_directory`); a symbolic link is followed only where nobody but root could have
  made it (owned by root, in a directory only root can write), as ``/var/run -> /run`` is;
* everything else is relative to an open directory (``dir_fd``): files are written to an
  unpredictable temporary name created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and renamed into
  place (a link at the final name is replaced, never followed), owner and mode are set with
  ``fchown``/``fchmod`` on the open descriptor, and an unlink or rmdir names one entry of the
  open directory;
* an existing object is checked (``lstat``: type, owner, link count) before it is read, changed
  or deleted (:meth:`Directory.entry`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnsafePath

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO someone planted would otherwise hang a root command for ever.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup
MAX_READ_BYTES = 16 * 1024 * 1024

Owner = tuple[int, int]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def only_root_can_write(info: os.stat_result) -> bool:
    """A directory whose entries only root can add, rename or remove: owned by root and not
    writable by group or others, or sticky (``/tmp``: others may add entries, but cannot replace
    or remove root's)."""
    return info.st_uid == 0 and (not info.st_mode & 0o022 or bool(info.st_mode & stat.S_ISVTX))


def describe(info: os.stat_result) -> str:
    """``owner asterisk, mode 0660`` for messages."""
    import pwd

    try:
        owner = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        owner = f"uid {info.st_uid}"
    return f"owner {owner}, mode {stat.S_IMODE(info.st_mode):04o}"


@dataclass(frozen=True)
class Entry:
    """What ``lstat`` says of one name in an open directory."""

    name: str
    info: os.stat_result

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.info.st_mode)

    @property
    def is_directory(self) -> bool:
        return stat.S_ISDIR(self.info.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.info.st_mode)

    def kind(self) -> str:
        if self.is_link:
            return "a symbolic link"
        if self.is_directory:
            return "a directory"
        if self.is_file:
            return "a file" if self.info.st_nlink == 1 else f"a file with {self.info.st_nlink} hard links"
        return "a special file"


class Directory:
    """A directory opened without following links; every operation is relative to its descriptor."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def set_owner(self, owner: Owner | None, mode: int | None = None) -> None:
        """chown/chmod this directory itself (on its descriptor: no path is looked up again)."""
        if owner is not None:
            os.fchown(self.fd, *owner)
        if mode is not None:
            os.fchmod(self.fd, mode)

    # -- looking -------------------------------------------------------------------------------
    def entry(self, name: str) -> Entry | None:
        """``lstat`` of ``name`` (``None`` if there is none); a link is reported, never followed."""
        _check_name(name)
        try:
            return Entry(name, os.stat(name, dir_fd=self.fd, follow_symlinks=False))
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        return sorted(os.listdir(self.fd))

    def read(self, name: str, limit: int = MAX_READ_BYTES) -> bytes | None:
        """The content of the regular file ``name`` with a single link (``None`` if it does not
        exist); anything else (a link, FIFO, directory, hard link) is refused."""
        _check_name(name)
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(f"{self.path / name} is a symbolic link: refusing to read it as root") from None
            raise
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                raise UnsafePath(f"{self.path / name} is {Entry(name, info).kind()}, not a plain file: refusing to read it")
            return handle.read(limit)

    def read_if_plain(self, name: str) -> bytes | None:
        """Like :meth:`read`, but ``None`` for anything that is not a plain file (to be replaced)."""
        entry = self.entry(name)
        if entry is None or not entry.is_file or entry.info.st_nlink != 1:
            return None
        try:
            return self.read(name)
        except UnsafePath:
            return None  # swapped for a link since the lstat: it will be replaced

    # -- changing ------------------------------------------------------------------------------
    def write(self, name: str, data: bytes, *, mode: int, owner: Owner | None = None) -> None:
        """Put ``data`` at ``name``: a new file under an unpredictable name, owner and mode set on
        its descriptor, fsync'd, then renamed over ``name`` (whatever was there is replaced, not
        written through)."""
        _check_name(name)
        temporary = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, _CREATE_FLAGS, 0o600, dir_fd=self.fd)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException as exc:
            try:
                os.unlink(temporary, dir_fd=self.fd)
            except OSError:
                pass
            if isinstance(exc, IsADirectoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOTEMPTY):
                raise UnsafePath(f"{self.path / name} is a directory, not a file voiceassist writes: "
                                 "remove it by hand if it is not yours") from None
            raise
        self._sync()

    def create_empty(self, name: str, *, mode: int, owner: Owner | None = None) -> bool:
        """Create ``name`` empty if there is nothing there (``O_EXCL``: never opens an existing
        file or link); returns whether it was created."""
        _check_name(name)
        try:
            fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=self.fd)
        except FileExistsError:
            return False
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return True

    def subdirectory(self, name: str, *, create: bool = False, mode: int = 0o750,
                     owner: Owner | None = None) -> tuple[Directory, bool]:
        """Open ``name`` (never through a link); with ``create`` make it first if missing, with
        ``owner`` and ``mode`` set on its descriptor. Returns the directory and whether it was made."""
        _check_name(name)
        made = False
        if create:
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)  # narrow until owner and mode are set
                made = True
            except FileExistsError:
                pass
        try:
            fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                entry = self.entry(name)
                what = entry.kind() if entry else "gone"
                raise UnsafePath(f"{self.path / name} is {what}, not a directory: refusing to use it as root") from None
            raise
        directory = Directory(fd, self.path / name)
        if made:
            directory.set_owner(owner, mode)
        return directory, made

    def unlink(self, name: str) -> None:
        """Remove the entry ``name`` (a link is removed itself; its target is untouched)."""
        _check_name(name)
        os.unlink(name, dir_fd=self.fd)
        self._sync()

    def rmdir(self, name: str) -> bool:
        """Remove the empty directory ``name``; False if it is not empty (or not a directory)."""
        _check_name(name)
        try:
            os.rmdir(name, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                return False
            raise
        return True

    def _sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError:
            pass


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(f"{name!r} is not a single file name")


def open_directory(path: str | os.PathLike[str], *, create: bool = False, mode: int = 0o755,
                   owner: Owner | None = None, created: list[Path] | None = None,
                   trusted: bool = False) -> Directory:
    """Open the directory ``path`` from ``/`` one component at a time, never through a link that
    someone other than root could have made.

    Args:
        create: make missing components (``mode``, ``owner``), appending each to ``created``.
        trusted: also require every directory on the way to be one only root can write
            (:func:`only_root_can_write`), so nobody else can swap what is below it.

    Raises:
        UnsafePath: a component is a link others could have made, not a directory, or (with
            ``trusted``) a directory someone other than root can write.
        FileNotFoundError: a component is missing (without ``create``).
    """
    pending = list(Path(os.path.abspath(path)).parts[1:])
    fd = os.open("/", _DIRECTORY_FLAGS)
    current = Path("/")
    links = 0
    try:
        while True:
            if trusted:
                _require_root_only(os.fstat(fd), current)
            if not pending:
                return Directory(fd, current)
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                # From a link's target: the physical parent, as the kernel resolves it.
                next_fd = os.open("..", _DIRECTORY_FLAGS, dir_fd=fd)
                os.close(fd)
                fd, current = next_fd, current.parent
                continue
            try:
                next_fd = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o700, dir_fd=fd)
                next_fd = os.open(part, _DIRECTORY_FLAGS, dir_fd=fd)
                if owner is not None:
                    os.fchown(next_fd, *owner)
                os.fchmod(next_fd, mode)
                if created is not None:
                    created.append(current / part)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                target = _root_made_link(fd, current, part)
                links += 1
                if links > _MAX_LINKS:
                    raise UnsafePath(f"{path}: too many symbolic links") from None
                pending = list(Path(target).parts[1:] if target.startswith("/") else Path(target).parts) + pending
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIRECTORY_FLAGS)
                    current = Path("/")
                continue
            os.close(fd)
            fd = next_fd
            current = current / part
    except BaseException:
        os.close(fd)
        raise


def _root_made_link(fd: int, current: Path, part: str) -> str:
    """The target of the link ``current/part`` if only root could have made it, else refuse."""
    try:
        info = os.stat(part, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        raise UnsafePath(f"{current / part} vanished while it was being opened") from None
    if not stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{current / part} is not a directory")
    if info.st_uid != 0 or not only_root_can_write(os.fstat(fd)):
        raise UnsafePath(f"{current / part} is a symbolic link the asterisk user (or another user) could have "
                         "made: refusing to follow it as root")
    return os.readlink(part, dir_fd=fd)


def _require_root_only(info: os.stat_result, path: Path) -> None:
    if not only_root_can_write(info):
        raise UnsafePath(f"{path} is {describe(info)}: users other than root can replace what is in it")


@contextmanager
def parent_directory(path: str | os.PathLike[str], **options: object) -> Iterator[tuple[Directory, str]]:
    """The open directory holding ``path`` and its last component: ``with parent_directory(p) as
    (directory, name): directory.write(name, ...)``."""
    target = Path(os.path.abspath(path))
    directory = open_directory(target.parent, **options)  # type: ignore[arg-type]
    try:
        yield directory, target.name
    finally:
        directory.close()


def lstat(path: str | os.PathLike[str]) -> Entry | None:
    """``lstat`` of ``path`` reached without following links (``None`` if it or a parent is missing)."""
    try:
        with parent_directory(path) as (directory, name):
            return directory.entry(name)
    except FileNotFoundError:
        return None


def read_plain(path: str | os.PathLike[str]) -> bytes | None:
    """The content of a plain file at ``path`` (``None`` if missing or not a plain file)."""
    try:
        with parent_directory(path) as (directory, name):
            return directory.read_if_plain(name)
    except (FileNotFoundError, UnsafePath):
        return None
