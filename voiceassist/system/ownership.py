"""Files root makes in the asterisk user's directories stay usable by the calls.

An admin runs `voiceassist db upgrade` or `db flush` as root right after `voiceassist install`;
the calls run as the asterisk user. A SQLite database, lock file or directory that root creates
in a directory the asterisk user owns is handed to that owner, or the next call could not write.
"""

from __future__ import annotations

import os
from pathlib import Path


def give_to_directory_owner(*paths: Path) -> None:
    """chown each existing path to the owner of its directory (only when running as root and the
    directory belongs to someone else)."""
    if os.geteuid() != 0:
        return
    for path in paths:
        try:
            owner = path.parent.stat()
            if owner.st_uid != 0 and path.lstat().st_uid != owner.st_uid:
                os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
        except OSError:
            pass
