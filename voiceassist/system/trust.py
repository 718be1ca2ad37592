"""Run as root, voiceassist trusts its config and knowledge file only if only root can write them.

The config names programs root's commands run (``[audio] ffmpeg``) and paths they write, and the
knowledge file is read into prompts sent to providers, so a file the asterisk user could change
or swap would let that user steer root. As sshd's StrictModes does, a root process refuses such a
file: it must be a plain file (not a symbolic link), owned by root, not writable by group or
others, and every directory above it must be one only root can write. The checks are made on the
opened descriptor (``fstat``) and on directories opened without following links
(:mod:`voiceassist.system.safe_files`), not on paths that could change between check and use.
Processes that are not root (the asterisk user's own AGI calls) read the same files unchecked:
they cannot gain anything from a file they could write themselves.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import UnsafePath, UntrustedFile
from .safe_files import describe, open_directory

CONFIG_DIR = Path("/etc/voiceassist")   # root:asterisk 0750; `fwconsole chown` leaves /etc/voiceassist alone
CONFIG_GROUP = "asterisk"               # reads the config (process AGI, the FastAGI server)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _move_fix(path: Path) -> str:
    return (f"install -d -o root -g {CONFIG_GROUP} -m 0750 {CONFIG_DIR} && mv {path} {CONFIG_DIR}/, "
            "review it (others could have changed it) and run `voiceassist doctor`")


def check_root_only_file(path: str | os.PathLike[str], what: str, *, missing_ok: bool = False) -> None:
    """Refuse ``path`` (raise :class:`~voiceassist.errors.UntrustedFile`, one line with the fix)
    unless only root can write it and the directories above it.

    Args:
        what: "config file" or "knowledge file", for the message.
        missing_ok: a missing file passes (its directories are still checked: nobody else can
            create it later).
    """
    target = Path(os.path.abspath(path))
    try:
        directory = open_directory(target.parent, trusted=True)
    except UnsafePath as exc:
        raise UntrustedFile(f"refusing the {what} {target}: {exc}", path=str(target), fix=_move_fix(target)) from None
    except FileNotFoundError:
        if missing_ok:
            return
        raise UntrustedFile(f"the {what} {target} does not exist", path=str(target), fix=f"create {target}") from None
    try:
        try:
            fd = os.open(target.name, _READ_FLAGS, dir_fd=directory.fd)
        except FileNotFoundError:
            if missing_ok:
                return
            raise UntrustedFile(f"the {what} {target} does not exist", path=str(target),
                                fix=f"create {target}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UntrustedFile(f"refusing the {what} {target}: it is a symbolic link (a command run as root "
                                    "follows no link to its settings)", path=str(target),
                                    fix=f"replace the link by the file itself (rm {target}, then write it there)") from None
            raise
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
    finally:
        directory.close()
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        raise UntrustedFile(f"refusing the {what} {target}: it is not a plain file with one link", path=str(target),
                            fix=f"replace it by a plain file (rm {target}, then write it there)")
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise UntrustedFile(f"refusing the {what} {target}: {describe(info)}, so users other than root can change "
                            "what commands run as root do", path=str(target),
                            fix=f"chown root:{CONFIG_GROUP} {target} && chmod 0640 {target}")


def require_trusted_files(config_path: Path | None, knowledge_file: str) -> None:
    """Run as root: the config file and the knowledge file it names pass :func:`check_root_only_file`.
    Does nothing for other users."""
    if os.geteuid() != 0:
        return
    if config_path is not None:
        check_root_only_file(config_path, "config file")
    if knowledge_file:
        check_root_only_file(knowledge_file, "knowledge file", missing_ok=True)
