"""Work on the asterisk user's files as the asterisk user.

The spool, the SQLite database, the answer and recording directories belong to the asterisk
user, who can put links and forged files there. A command an admin runs as root (``db``,
``calls``, ``ask``, ``serve``, doctor's database check, ``uninstall --purge``) therefore does that
work as the asterisk user: whatever was planted can then reach only what that user could reach
anyway. The config is loaded and checked first, as root (:mod:`voiceassist.system.trust`).
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from collections.abc import Callable
from typing import Any

from ..errors import VoiceAssistError

SERVICE_USER = "asterisk"


class PrivilegeError(VoiceAssistError):
    """Dropping to the asterisk user failed, or the work done as that user failed."""


def service_account(user: str = SERVICE_USER) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(user)
    except KeyError:
        return None


def drop_privileges(user: str = SERVICE_USER) -> bool:
    """As root, become ``user`` for good (supplementary groups, group, then user: the order that
    leaves no way back); returns whether it happened (False when not root or no such user, as on
    a development machine)."""
    if os.geteuid() != 0:
        return False
    account = service_account(user)
    if account is None:
        return False
    os.initgroups(account.pw_name, account.pw_gid)
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - the kernel never allows this after setuid as root
        raise PrivilegeError(f"could not drop root privileges to {user}")
    os.environ.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    try:
        os.chdir("/")  # root's working directory may not be searchable by the asterisk user
    except OSError:
        pass
    return True


def run_as_service_user(work: Callable[[], Any], user: str = SERVICE_USER) -> Any:
    """Run ``work`` in a forked child that has dropped to ``user`` while this process stays root;
    return its result, which must be JSON (never pickle: the child runs as the user we do not
    trust). Without root or without the user, ``work`` runs here.

    Raises:
        PrivilegeError: the child failed; its error message is kept.
    """
    if os.geteuid() != 0 or service_account(user) is None:
        return work()
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            os.close(read_end)
            drop_privileges(user)
            try:
                message = {"result": work()}
            except Exception as exc:  # sent to the parent as one line
                message = {"error": f"{exc}"}
                code = 1
            data = json.dumps(message).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view):]
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    try:
        message = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        message = {}
    if not isinstance(message, dict) or ("result" not in message and "error" not in message):
        raise PrivilegeError(f"the check run as {user} ended without an answer")
    if "error" in message:
        raise PrivilegeError(str(message["error"]))
    return message["result"]
