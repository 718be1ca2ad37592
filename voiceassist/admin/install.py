"""``voiceassist install`` / ``uninstall``: put voiceassist into an Asterisk or FreePBX system.

Paths come from ``/etc/asterisk/asterisk.conf`` (astagidir, astdatadir, astspooldir, astvarlibdir,
astlogdir), not from assumptions. Install only makes the changes still needed (so a second run
changes nothing), ``--dry-run`` prints them without making them, and a manifest records what was
added so that uninstall removes exactly that: our files (only while they are still what we
wrote), our dialplan blocks (between marker lines; the admin's own lines are never touched), the
directories we created if empty.

Both run as root in directories the asterisk user can write (agi-bin, sounds, spool,
/var/lib/asterisk, /var/log/asterisk, /etc/asterisk), so every write, chown and delete goes
through :mod:`voiceassist.system.safe_files` (no link is followed, existing objects are checked first),
the manifest lives where only root can write (``/var/lib/voiceassist``, 0700), and the asterisk
user's data is deleted by the asterisk user (:mod:`voiceassist.system.privileges`).
"""

from __future__ import annotations

import configparser
import functools
import grp
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from ..config import DEFAULT_CONFIG_PATH, DEFAULTS, LEGACY_CONFIG_PATH, Config, load_config
from ..errors import ConfigError, UnsafePath, VoiceAssistError
from ..system.privileges import SERVICE_USER, run_as_service_user
from ..system.safe_files import Owner, describe, open_directory, parent_directory, sha256
from ..system.shipped import shipped_candidates, shipped_path
from ..system.trust import CONFIG_DIR

PACKAGE = Path(__file__).resolve().parents[1]  # voiceassist/
BEGIN_MARK = "; BEGIN voiceassist (added by `voiceassist install`; `voiceassist uninstall` removes it)"
END_MARK = "; END voiceassist"
ASTERISK_USER = SERVICE_USER
SYSTEMD_DIR = Path("/etc/systemd/system")
UNIT_PATH = SYSTEMD_DIR / "voiceassist.service"
PRUNE_SERVICE_PATH = SYSTEMD_DIR / "voiceassist-prune.service"
PRUNE_TIMER_PATH = SYSTEMD_DIR / "voiceassist-prune.timer"
CRON_PATH = Path("/etc/cron.d/voiceassist")
LOGROTATE_PATH = Path("/etc/logrotate.d/voiceassist")
# Root's own record of what install made: never in a directory the asterisk user can write,
# since uninstall deletes what it names.
MANIFEST_DIR = Path("/var/lib/voiceassist")
MANIFEST_PATH = MANIFEST_DIR / "install-manifest.json"

# Manifest kinds: what uninstall may do with each path.
FILE = "file"            # a file install wrote: removed while its content is still what we wrote
CONFIG = "config"        # the config: removed by --purge only (the admin edits it)
LOG = "log"              # our log file: removed by --purge only
DATA = "data"            # the asterisk user's data directory: --purge empties it as that user
DIRECTORY = "directory"  # a directory install made: removed when empty


class InstallError(VoiceAssistError):
    """The system is not in a state install/uninstall can work with."""


@dataclass(frozen=True)
class AsteriskPaths:
    etc: Path
    agi_bin: Path
    data: Path
    spool: Path
    var_lib: Path
    log: Path

    @property
    def sounds(self) -> Path:
        return self.data / "sounds" / "custom" / "voiceassist"

    @property
    def legacy_manifest(self) -> Path:
        """Where versions before the root-only manifest kept it (the asterisk user can write there)."""
        return self.var_lib / "voiceassist" / "install-manifest.json"


def asterisk_paths(asterisk_conf: Path = Path("/etc/asterisk/asterisk.conf")) -> AsteriskPaths:
    """Asterisk's directories as its own ``[directories]`` section sets them (defaults otherwise)."""
    values: dict[str, str] = {}
    if asterisk_conf.exists():
        parser = configparser.ConfigParser(delimiters=("=>", "="), comment_prefixes=(";",),
                                           inline_comment_prefixes=(";",), strict=False, interpolation=None)
        try:
            parser.read_string(asterisk_conf.read_text(encoding="utf-8", errors="replace"))
        except configparser.Error as exc:
            raise ConfigError(f"{asterisk_conf} cannot be parsed: {exc}") from None
        if parser.has_section("directories"):  # "[directories](!)": the template mark is dropped
            values = {k: v.strip() for k, v in parser.items("directories")}

    def path(key: str, default: str) -> Path:
        return Path(values.get(key) or default)

    return AsteriskPaths(etc=path("astetcdir", "/etc/asterisk"), agi_bin=path("astagidir", "/var/lib/asterisk/agi-bin"),
                         data=path("astdatadir", "/var/lib/asterisk"), spool=path("astspooldir", "/var/spool/asterisk"),
                         var_lib=path("astvarlibdir", "/var/lib/asterisk"), log=path("astlogdir", "/var/log/asterisk"))


def shipped_file(name: str) -> Path:
    """A file shipped beside the package (:mod:`voiceassist.system.shipped`)."""
    found = shipped_path(name)
    if found is None:
        raise InstallError(f"{name} is missing from this voiceassist installation (looked in "
                           f"{' and '.join(str(c.parent) for c in shipped_candidates(name))})")
    return found


# -- the dialplan ---------------------------------------------------------------------------------
def dialplan_block(config: Config) -> str:
    """Our contexts between the marker lines, dialling the FastAGI server where ``[fastagi]`` puts it."""
    from ..asterisk.dialplan import SHIPPED_FASTAGI_URL, with_configured_urls

    text = shipped_file("extensions_custom.conf").read_text(encoding="utf-8").rstrip()
    if SHIPPED_FASTAGI_URL not in text:
        raise InstallError(f"the shipped extensions_custom.conf no longer contains {SHIPPED_FASTAGI_URL}")
    text = with_configured_urls(text, config)
    return f"{BEGIN_MARK}\n{text}\n{END_MARK}\n"


INCLUDE_BLOCK = f"{BEGIN_MARK}\n#include extensions_custom.conf\n{END_MARK}\n"
_INCLUDE_LINE = re.compile(r"""^\s*#\s*(?:try)?include\s+["<]?(?:\S*/)?extensions_custom\.conf[">]?\s*(?:;.*)?$""",
                           re.MULTILINE)


def includes_custom(extensions_conf: str) -> bool:
    """Whether ``extensions.conf`` loads ``extensions_custom.conf`` (FreePBX's does; Debian's stock one does not)."""
    return bool(_INCLUDE_LINE.search(extensions_conf))


def without_block(text: str) -> str:
    """``text`` with our marked block (and the blank line we put before it) removed."""
    start = text.find(BEGIN_MARK)
    if start < 0:
        return text
    end = text.find(END_MARK, start)
    if end < 0:
        raise InstallError(f"found '{BEGIN_MARK[:20]}...' without its '{END_MARK}' line: fix the file by hand")
    end += len(END_MARK)
    if text[end:end + 1] == "\n":
        end += 1
    before = text[:start]
    if before.endswith("\n\n"):
        before = before[:-1]
    return before + text[end:]


def with_block(text: str, block: str) -> str:
    rest = without_block(text)
    separator = "" if not rest or rest.endswith("\n\n") else ("\n" if rest.endswith("\n") else "\n\n")
    return rest + separator + block


def wrapper_script(executable: Path, config: Path | None) -> str:
    config_line = f'export VOICEASSIST_CONFIG="{config}"\n' if config else ""
    return ("#!/bin/sh\n"
            "# voiceassist AGI entry point, written by `voiceassist install`. AGI(voiceassist,...) runs it.\n"
            "# The venv stays outside agi-bin: `fwconsole chown` makes everything in agi-bin 0755.\n"
            f"{config_line}exec \"{executable}\" agi \"$@\"\n")


def wrapper_target(script: str) -> str:
    """The program a wrapper written by :func:`wrapper_script` execs ("" if none)."""
    for line in script.splitlines():
        if line.startswith("exec "):
            return line.split('"')[1] if '"' in line else line.split()[1]
    return ""


# -- systemd, cron, logrotate ---------------------------------------------------------------------
def _environment_line(config_path: Path) -> str:
    return f"Environment=VOICEASSIST_CONFIG={config_path}\n"


def systemd_unit(executable: Path, config_path: Path, config: Config, writable: list[Path]) -> str:
    section = config.section("fastagi")
    read_write = " ".join(f"-{path}" for path in sorted(set(writable)))
    # The address only: a [fastagi] secret in the URL stays out of this world-readable file.
    address = f"{section.get('host')}:{section.get('port')}"
    return f"""# voiceassist FastAGI server, written by `voiceassist install --fastagi`.
[Unit]
Description=voiceassist FastAGI server on {address} ([fastagi] in {config_path})
After=network.target asterisk.service mariadb.service postgresql.service

[Service]
Type=simple
User={ASTERISK_USER}
Group={ASTERISK_USER}
{_environment_line(config_path)}ExecStart={executable} serve
# SIGTERM lets the calls in flight finish.
KillSignal=SIGTERM
TimeoutStopSec=90
Restart=on-failure
RestartSec=2
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictSUIDSGID=yes
LockPersonality=yes
# What it writes: answers and recordings, the spool, the SQLite database, its log.
ReadWritePaths={read_write}

[Install]
WantedBy=multi-user.target
"""


def prune_service(executable: Path, config_path: Path) -> str:
    return f"""# voiceassist retention, written by `voiceassist install`: deletes calls older than
# [privacy] retention_days (nothing while it is 0). Started daily by voiceassist-prune.timer.
[Unit]
Description=voiceassist: delete calls past [privacy] retention_days

[Service]
Type=oneshot
User={ASTERISK_USER}
Group={ASTERISK_USER}
{_environment_line(config_path)}ExecStart={executable} db prune
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
"""


PRUNE_TIMER = """# voiceassist retention, written by `voiceassist install`.
[Unit]
Description=daily voiceassist db prune

[Timer]
OnCalendar=daily
RandomizedDelaySec=1h
Persistent=true

[Install]
WantedBy=timers.target
"""


def prune_cron(executable: Path, config_path: Path) -> str:
    return f"""# voiceassist retention, written by `voiceassist install`: deletes calls older than
# [privacy] retention_days (nothing while it is 0), daily, as the {ASTERISK_USER} user. Errors are mailed.
SHELL=/bin/sh
PATH=/usr/bin:/bin
VOICEASSIST_CONFIG={config_path}
17 3 * * * {ASTERISK_USER} [ -x {executable} ] && {executable} db prune >/dev/null
"""


def logrotate_snippet(log_file: Path) -> str:
    return f"""# voiceassist's log, written by `voiceassist install`. Every voiceassist process logs through a
# WatchedFileHandler, which reopens the file after it is rotated: no copytruncate needed.
{log_file} {{
    su {ASTERISK_USER} {ASTERISK_USER}
    weekly
    rotate 8
    compress
    delaycompress
    missingok
    notifempty
    create 0640 {ASTERISK_USER} {ASTERISK_USER}
}}
"""


# -- the manifest ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One thing install made: its path, what uninstall may do with it (a kind above) and, for a
    file, the SHA-256 of what we wrote."""

    path: str
    kind: str
    sha256: str = ""


def load_manifest(out: Callable[[str], None] = print) -> list[Record] | None:
    """The manifest's records, or ``None`` if there is none we can trust (a warning says why)."""
    try:
        with open_directory(MANIFEST_DIR, trusted=True) as directory:
            data = directory.read(MANIFEST_PATH.name)
    except FileNotFoundError:
        return None
    except UnsafePath as exc:
        out(f"warning: ignoring the manifest {MANIFEST_PATH}: {exc}")
        return None
    if data is None:
        return None
    try:
        raw = json.loads(data)
        return [Record(str(r["path"]), str(r["kind"]), str(r.get("sha256", ""))) for r in raw["records"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise InstallError(f"{MANIFEST_PATH} is damaged ({exc}); remove voiceassist's files by hand") from None


def save_manifest(records: list[Record]) -> None:
    created: list[Path] = []
    with open_directory(MANIFEST_DIR, create=True, mode=0o700, owner=(0, 0), created=created) as directory:
        directory.set_owner((0, 0), 0o700)  # only root reads or changes what uninstall will delete
        if not records:
            if directory.entry(MANIFEST_PATH.name):
                directory.unlink(MANIFEST_PATH.name)
            return
        data = json.dumps({"version": 2, "records": [r.__dict__ for r in records]}, indent=2) + "\n"
        directory.write(MANIFEST_PATH.name, data.encode(), mode=0o600, owner=(0, 0))


def _merge(records: list[Record], new: list[Record]) -> list[Record]:
    by_path = {r.path: r for r in records}
    for record in new:
        by_path[record.path] = record  # a rewritten file: the hash of what we wrote last
    return list(by_path.values())


# -- install --------------------------------------------------------------------------------------
@dataclass
class Change:
    """One change install would make: shown by --dry-run, made otherwise. ``apply`` returns the
    records of what it made (for the manifest)."""

    description: str
    apply: Callable[[], list[Record]]
    kind: str = ""   # "dialplan", "unit", "timer": what run_install does afterwards


def _asterisk_ids() -> Owner | None:
    try:
        return pwd.getpwnam(ASTERISK_USER).pw_uid, grp.getgrnam(ASTERISK_USER).gr_gid
    except KeyError:
        return None


def _asterisk_group() -> int:
    ids = _asterisk_ids()
    return ids[1] if ids else 0


class Installer:
    """Works out and makes the changes of ``voiceassist install`` (see the module docstring)."""

    def __init__(self, paths: AsteriskPaths, *, config_path: Path, executable: Path, config: Config,
                 fastagi: bool = False, systemd: bool = False) -> None:
        self.paths = paths
        self.config_path = config_path
        self.config = config
        self.executable = executable
        self.fastagi = fastagi
        self.systemd = systemd
        self.dialplan_file = paths.etc / "extensions_custom.conf"
        self.extensions_conf = paths.etc / "extensions.conf"
        self.wrapper = paths.agi_bin / "voiceassist"
        self.log_file = paths.log / "voiceassist.log"

    # What install manages, and so all uninstall may ever remove.
    def data_directories(self) -> list[Path]:
        return [self.paths.spool / "voiceassist", self.paths.spool / "voiceassist-spool",
                self.paths.var_lib / "voiceassist"]

    def prompts(self) -> list[Path]:
        return sorted(shipped_file("sounds").glob("*.ulaw"))

    def managed(self) -> dict[Path, str]:
        """Every path install may create, with its kind."""
        paths: dict[Path, str] = {d: DATA for d in self.data_directories()}
        paths[self.paths.sounds] = DIRECTORY
        paths.update({self.paths.sounds / p.name: FILE for p in self.prompts()})
        paths[self.wrapper] = FILE
        paths[self.config_path] = CONFIG
        paths[CONFIG_DIR] = DIRECTORY
        paths[self.log_file] = LOG
        for unit in (UNIT_PATH, PRUNE_SERVICE_PATH, PRUNE_TIMER_PATH, CRON_PATH, LOGROTATE_PATH):
            paths[unit] = FILE
        for directory in (CRON_PATH.parent, LOGROTATE_PATH.parent, SYSTEMD_DIR):
            paths.setdefault(directory, DIRECTORY)
        # Parents install creates when they are missing (e.g. sounds/custom on plain Asterisk).
        for path in list(paths):
            for parent in path.parents:
                if any(parent.is_relative_to(base) and parent != base for base in self._bases()):
                    paths.setdefault(parent, DIRECTORY)
        return paths

    def _bases(self) -> list[Path]:
        return [self.paths.data, self.paths.agi_bin, self.paths.spool, self.paths.var_lib, self.paths.log]

    def wrapper_text(self) -> str:
        default_config = self.config_path == DEFAULT_CONFIG_PATH
        return wrapper_script(self.executable, None if default_config else self.config_path)

    def writable_paths(self) -> list[Path]:
        """What the FastAGI server writes, as the config says: answers, spool, SQLite database, log."""
        general, database = self.config.section("general"), self.config.section("database")
        paths = [Path(general.get("answer_dir")), Path(database.get("spool_dir"))]
        url = database.get("url")
        if url.startswith("sqlite:///"):
            paths.append(Path(url[len("sqlite:///"):].split("?")[0]).parent)
        log = self.config.section("logging").get("file")
        if log:
            paths.append(Path(log).parent)
        return paths

    def plan(self) -> list[Change]:
        changes: list[Change] = []
        ids = _asterisk_ids()
        for directory in self.data_directories():
            entry = _lstat(directory)
            if entry is None:
                changes.append(Change(f"create directory {directory} (owner {ASTERISK_USER}, 0750)",
                                      functools.partial(self._data_directory, directory)))
            elif ids is not None and (entry.st_uid, entry.st_gid) != ids:
                # The asterisk user writes answers, spooled turns and the SQLite database here.
                changes.append(Change(f"give {directory} to {ASTERISK_USER}", functools.partial(self._data_directory, directory)))
        sounds = self.paths.sounds
        if _lstat(sounds) is None:
            changes.append(Change(f"create directory {sounds} (0755: Asterisk reads the prompts)",
                                  lambda: self._sounds_directory()))
        for prompt in self.prompts():
            target = sounds / prompt.name
            if _read_plain(target) != prompt.read_bytes():
                changes.append(Change(f"copy prompt {prompt.name} to {target}",
                                      functools.partial(self._prompt, prompt)))
        script = self.wrapper_text()
        if _read_plain(self.wrapper) != script.encode():
            changes.append(Change(f"write AGI wrapper {self.wrapper} (runs {self.executable} agi)",
                                  lambda: self._root_file(self.wrapper, script, 0o755, create_parent_mode=0o755)))
        if self.config_path.parent == CONFIG_DIR:
            entry = _lstat(CONFIG_DIR)
            if entry is None or (entry.st_uid, entry.st_gid, stat.S_IMODE(entry.st_mode)) != (0, _asterisk_group(), 0o750):
                changes.append(Change(f"create directory {CONFIG_DIR} (root:{ASTERISK_USER} 0750: only root writes "
                                      "the config)", lambda: self._config_directory()))
        legacy_in_use = self.config_path == LEGACY_CONFIG_PATH
        if _lstat(self.config_path) is None and not legacy_in_use:
            changes.append(Change(f"write {self.config_path} from the commented template (root:{ASTERISK_USER} 0640: "
                                  "it holds API keys, the calls read it, only root may change it)",
                                  lambda: self._config_file()))
        if _lstat(self.log_file) is None:
            changes.append(Change(f"create log file {self.log_file} (owner {ASTERISK_USER}, 0640)",
                                  lambda: self._log_file()))
        block = dialplan_block(self.config)
        current = _read_text(self.dialplan_file)
        if with_block(current, block) != current:
            verb = "update" if BEGIN_MARK in current else "add"
            changes.append(Change(f"{verb} the [voiceassist] contexts in {self.dialplan_file} (between marker lines)",
                                  lambda: self._rewrite(self.dialplan_file, lambda t: with_block(t, block)),
                                  kind="dialplan"))
        extensions = _read_text(self.extensions_conf)
        if _lstat(self.extensions_conf) is not None and not includes_custom(extensions):
            changes.append(Change(f"add `#include extensions_custom.conf` to {self.extensions_conf} (between marker "
                                  "lines: plain Asterisk does not load extensions_custom.conf)",
                                  lambda: self._rewrite(self.extensions_conf, lambda t: with_block(t, INCLUDE_BLOCK)),
                                  kind="dialplan"))
        if self.fastagi:
            unit = systemd_unit(self.executable, self.config_path, self.config, self.writable_paths())
            if _read_plain(UNIT_PATH) != unit.encode():
                changes.append(Change(f"write systemd unit {UNIT_PATH} (voiceassist serve as {ASTERISK_USER})",
                                      lambda: self._root_file(UNIT_PATH, unit, 0o644), kind="unit"))
        if self.systemd:
            for path, text in ((PRUNE_SERVICE_PATH, prune_service(self.executable, self.config_path)),
                               (PRUNE_TIMER_PATH, PRUNE_TIMER)):
                if _read_plain(path) != text.encode():
                    changes.append(Change(f"write {path} (daily `voiceassist db prune` as {ASTERISK_USER})",
                                          functools.partial(self._root_file, path, text, 0o644), kind="timer"))
        else:
            cron = prune_cron(self.executable, self.config_path)
            if _read_plain(CRON_PATH) != cron.encode():
                changes.append(Change(f"write {CRON_PATH} (daily `voiceassist db prune` as {ASTERISK_USER})",
                                      lambda: self._root_file(CRON_PATH, cron, 0o644)))
        rotate = logrotate_snippet(Path(self.config.section("logging").get("file") or self.log_file))
        if _read_plain(LOGROTATE_PATH) != rotate.encode():
            changes.append(Change(f"write {LOGROTATE_PATH} (rotates the log as {ASTERISK_USER})",
                                  lambda: self._root_file(LOGROTATE_PATH, rotate, 0o644)))
        return changes

    # -- the changes themselves ---------------------------------------------------------------
    def _data_directory(self, path: Path) -> list[Record]:
        ids = _asterisk_ids()
        created: list[Path] = []
        # A missing Asterisk directory above it is made 0755, as Asterisk's own are (traversable).
        with open_directory(path.parent, create=True, mode=0o755, created=created) as parent:
            directory, made = parent.subdirectory(path.name, create=True, mode=0o750, owner=ids)
            with directory:
                info = directory.stat()
                if not made and ids is not None and (info.st_uid, info.st_gid) != ids:
                    if info.st_uid not in (0, ids[0]):
                        raise UnsafePath(f"{path} exists with {describe(info)}: not voiceassist's; move it away "
                                         "or chown it to asterisk yourself")
                    directory.set_owner(ids)  # on the open descriptor: a link swapped in now is not followed
        return [*(Record(str(p), DIRECTORY) for p in created), *([Record(str(path), DATA)] if made else [])]

    def _sounds_directory(self) -> list[Record]:
        created: list[Path] = []
        # 0755 root: Asterisk (and only root) needs to read the prompts, never to write them.
        open_directory(self.paths.sounds, create=True, mode=0o755, owner=(0, 0), created=created).close()
        return [Record(str(p), DIRECTORY) for p in created]

    def _prompt(self, prompt: Path) -> list[Record]:
        data = prompt.read_bytes()
        created: list[Path] = []
        with open_directory(self.paths.sounds, create=True, mode=0o755, owner=(0, 0), created=created) as directory:
            # 0644: Asterisk reads it; a link or file planted under this name is replaced, not written through.
            directory.write(prompt.name, data, mode=0o644, owner=(0, 0))
        return [*(Record(str(p), DIRECTORY) for p in created), Record(str(self.paths.sounds / prompt.name), FILE, sha256(data))]

    def _root_file(self, path: Path, text: str, mode: int, create_parent_mode: int = 0o755) -> list[Record]:
        """A root-owned file outside the asterisk user's reach. Modes: 0755 for the AGI wrapper
        (Asterisk executes it), 0644 for systemd units, the cron file and the logrotate snippet
        (the convention there; they hold no secret); a missing parent is made 0755 as those
        directories are."""
        data = text.encode()
        created: list[Path] = []
        with open_directory(path.parent, create=True, mode=create_parent_mode, created=created) as directory:
            directory.write(path.name, data, mode=mode, owner=(0, 0))
        return [*(Record(str(p), DIRECTORY) for p in created), Record(str(path), FILE, sha256(data))]

    def _config_directory(self) -> list[Record]:
        with open_directory(CONFIG_DIR.parent) as etc:
            directory, made = etc.subdirectory(CONFIG_DIR.name, create=True, mode=0o750, owner=(0, _asterisk_group()))
            with directory:
                info = directory.stat()
                if info.st_uid != 0:
                    raise UnsafePath(f"{CONFIG_DIR} is {describe(info)}: only root may own the config's directory; "
                                     f"chown root:{ASTERISK_USER} {CONFIG_DIR} && chmod 0750 {CONFIG_DIR}")
                directory.set_owner((0, _asterisk_group()), 0o750)
        return [Record(str(CONFIG_DIR), DIRECTORY)] if made else []

    def _config_file(self) -> list[Record]:
        data = self.config_template().encode()
        with parent_directory(self.config_path) as (directory, name):
            if directory.entry(name) is not None:
                return []  # appeared since the plan: never overwrite the admin's config
            directory.write(name, data, mode=0o640, owner=(0, _asterisk_group()))
        return [Record(str(self.config_path), CONFIG)]

    def _log_file(self) -> list[Record]:
        ids = _asterisk_ids()
        with open_directory(self.log_file.parent, create=True, mode=0o755) as directory:
            # O_EXCL: whatever the asterisk user put at this name meanwhile is left alone, not opened.
            made = directory.create_empty(self.log_file.name, mode=0o640, owner=ids)
        return [Record(str(self.log_file), LOG)] if made else []

    def _rewrite(self, path: Path, transform: Callable[[str], str]) -> list[Record]:
        rewrite_keeping_owner(path, transform)
        return []

    def config_template(self) -> str:
        template = Template((PACKAGE / "templates" / "voiceassist.conf").read_text(encoding="utf-8"))
        return template.substitute(
            answer_dir=self.paths.spool / "voiceassist",
            spool_dir=self.paths.spool / "voiceassist-spool",
            database_url=f"sqlite:///{self.paths.var_lib / 'voiceassist' / 'voiceassist.db'}",
            log_file=self.log_file,
            config_dir=CONFIG_DIR)


def rewrite_keeping_owner(path: Path, transform: Callable[[str], str]) -> None:
    """Rewrite a dialplan file through ``transform``, keeping its owner and mode (Asterisk, running
    as asterisk, must still read it: FreePBX has it asterisk:asterisk 0640). A new file is
    root:asterisk 0640. A link, a hard link or a file of another owner is refused."""
    ids = _asterisk_ids()
    with parent_directory(path) as (directory, name):
        entry = directory.entry(name)
        if entry is None:
            current, owner, mode = "", (0, _asterisk_group()), 0o640
        else:
            info = entry.info
            if not entry.is_file or info.st_nlink != 1:
                raise UnsafePath(f"{path} is {entry.kind()}: refusing to rewrite it as root (make it a plain file)")
            if info.st_uid not in (0, *(ids[:1] if ids else ())):
                raise UnsafePath(f"{path} has {describe(info)}: refusing to rewrite a file of another user")
            data = directory.read(name)
            current = (data or b"").decode("utf-8", errors="surrogateescape")
            owner, mode = (info.st_uid, info.st_gid), stat.S_IMODE(info.st_mode)
        new = transform(current)
        if new != current:
            directory.write(name, new.encode("utf-8", errors="surrogateescape"), mode=mode, owner=owner)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _read_plain(path: Path) -> bytes | None:
    from ..system.safe_files import read_plain

    return read_plain(path)


def _read_text(path: Path) -> str:
    return (_read_plain(path) or b"").decode("utf-8", errors="surrogateescape")


def asterisk_running() -> bool:
    try:
        result = subprocess.run(["asterisk", "-rx", "core show version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and "Asterisk" in result.stdout


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir()


def reload_dialplan() -> str:
    result = subprocess.run(["asterisk", "-rx", "dialplan reload"], capture_output=True, text=True, timeout=30)
    return (result.stdout + result.stderr).strip()


FREEPBX_STEPS = """FreePBX: make 8008 dial the assistant (once, in the web interface):
  1. Admin > Custom Destinations > Add: Target  {context},8008,1   Description  voiceassist
  2. Applications > Misc Applications > Add: Feature Code  8008   Destination  Custom Destinations: voiceassist
  3. Submit, then Apply Config.
  (voiceassist does not write FreePBX's database itself: these two screens are the supported way.)
Plain Asterisk: add  include => {context}  to the context your phones use, then `dialplan reload`."""


def installed_config(config_path: Path) -> Config:
    """The config the calls will use (checked as root: refused unless only root can write it), or
    the built-in defaults the template repeats when there is none yet."""
    if config_path.exists() or config_path.is_symlink():
        return load_config(config_path, environ={})
    return Config({name: dict(values) for name, values in DEFAULTS.items()})


def run_install(*, config_path: Path, dry_run: bool, reload: bool, fastagi: bool,
                asterisk_conf: Path = Path("/etc/asterisk/asterisk.conf"), out: Callable[[str], None] = print) -> int:
    if os.geteuid() != 0 and not dry_run:
        raise InstallError("run `voiceassist install` as root (it writes to /etc/asterisk and Asterisk's directories); "
                           "--dry-run shows the changes without root")
    paths = asterisk_paths(asterisk_conf)
    config = installed_config(config_path)
    executable = Path(sys.prefix) / "bin" / "voiceassist"
    installer = Installer(paths, config_path=config_path, executable=executable, config=config, fastagi=fastagi,
                          systemd=systemd_running())
    changes = installer.plan()
    if _asterisk_ids() is None:
        out(f"warning: no '{ASTERISK_USER}' user here; files stay owned by root")
    if paths.legacy_manifest.exists() or paths.legacy_manifest.is_symlink():
        out(f"warning: ignoring {paths.legacy_manifest}: it is in a directory the {ASTERISK_USER} user can write; "
            f"install now keeps its record in {MANIFEST_PATH}")
    if not changes:
        out("voiceassist is installed; nothing to change")
    records = (load_manifest(out) or []) if not dry_run else []
    try:
        for change in changes:
            out(("would " if dry_run else "") + change.description)
            if not dry_run:
                records = _merge(records, change.apply())
                save_manifest(records)
    except UnsafePath as exc:
        raise InstallError(f"refused: {exc}") from None
    kinds = {c.kind for c in changes}
    if reload and "dialplan" in kinds and not dry_run:
        if asterisk_running():
            out(f"dialplan reload: {reload_dialplan() or 'done'}")
        else:
            out("Asterisk is not running: the dialplan loads when it starts")
    elif "dialplan" in kinds:
        out(("would run" if dry_run else "run") + ' `asterisk -rx "dialplan reload"`')
    if not dry_run and installer.systemd and ("unit" in kinds or "timer" in kinds):
        subprocess.run(["systemctl", "daemon-reload"], check=False)
        if "timer" in kinds:
            subprocess.run(["systemctl", "enable", "--now", PRUNE_TIMER_PATH.name], check=False)
            out(f"systemctl enable --now {PRUNE_TIMER_PATH.name}")
        if "unit" in kinds:
            subprocess.run(["systemctl", "enable", "--now", UNIT_PATH.name], check=False)
            out(f"systemctl enable --now {UNIT_PATH.name}")
    elif fastagi and not dry_run and "unit" in kinds:
        out(f"systemd is not running here: start the server with  runuser -u {ASTERISK_USER} -- "
            f"{executable} --config {config_path} serve")
    if config_path == LEGACY_CONFIG_PATH:
        out(f"note: the config is still {LEGACY_CONFIG_PATH}; move it where only root can write: "
            f"install -d -o root -g {ASTERISK_USER} -m 0750 {CONFIG_DIR} && mv {LEGACY_CONFIG_PATH} {CONFIG_DIR}/")
    out("")
    out(FREEPBX_STEPS.format(context="voiceassist-fastagi" if fastagi else "voiceassist"))
    out("Then: `voiceassist doctor`, and dial 8008.")
    return 0


# -- uninstall ------------------------------------------------------------------------------------
def _known_records(installer: Installer) -> list[Record]:
    """Without a manifest we can trust (e.g. after an upgrade from a version that kept it in an
    asterisk-writable directory): the files install would write now, by their content."""
    records = [Record(str(installer.wrapper), FILE, sha256(installer.wrapper_text().encode()))]
    records += [Record(str(installer.paths.sounds / p.name), FILE, sha256(p.read_bytes())) for p in installer.prompts()]
    records += [Record(str(installer.paths.sounds), DIRECTORY)]
    records += [Record(str(d), DATA) for d in installer.data_directories()]
    return records


def _remove_file(record: Record, purge: bool, out: Callable[[str], None]) -> bool:
    """Remove one file record if it is still what install made; True when it is gone."""
    path = Path(record.path)
    with parent_directory(path) as (directory, name):
        entry = directory.entry(name)
        if entry is None:
            return True
        if not entry.is_file or entry.info.st_nlink != 1:
            out(f"warning: left {path} alone: it is now {entry.kind()}, not the file install wrote")
            return False
        if record.kind == FILE:
            data = directory.read_if_plain(name)
            if data is None or sha256(data) != record.sha256:
                out(f"warning: left {path} alone: it changed since install wrote it")
                return False
        elif record.kind == CONFIG and entry.info.st_uid != 0:
            out(f"warning: left {path} alone: it is {describe(entry.info)}, not the root-owned config install wrote")
            return False
        directory.unlink(name)
        return True


def _empty_as_service_user(path: Path) -> list[str]:
    """Delete what is inside ``path`` as the asterisk user (whatever links that user planted there
    reach only what it could delete itself); returns what could not be deleted."""
    def empty() -> list[str]:
        problems: list[str] = []
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return problems
        except OSError as exc:
            return [f"{path}: {exc.strerror}"]
        try:
            for name in os.listdir(fd):
                try:
                    if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                        shutil.rmtree(name, dir_fd=fd)
                    else:
                        os.unlink(name, dir_fd=fd)
                except OSError as exc:
                    problems.append(f"{path / name}: {exc.strerror}")
        finally:
            os.close(fd)
        return problems

    return list(run_as_service_user(empty))


def _remove_directory(record: Record, purge: bool, out: Callable[[str], None]) -> bool:
    path = Path(record.path)
    if record.kind == DATA and purge:
        for problem in _empty_as_service_user(path):
            out(f"warning: could not delete {problem}")
    try:
        with parent_directory(path) as (directory, name):
            entry = directory.entry(name)
            if entry is None:
                return True
            if not entry.is_directory:
                out(f"warning: left {path} alone: it is now {entry.kind()}, not the directory install made")
                return False
            if directory.rmdir(name):
                return True
    except FileNotFoundError:
        return True
    if purge:
        out(f"warning: left {path}: not empty")
    return False


def _remove_our_lines(dialplan_file: Path) -> bool:
    rewrite_keeping_owner(dialplan_file, without_block)
    return True


def _disable_unit(unit: Path) -> bool:
    subprocess.run(["systemctl", "disable", "--now", unit.name], check=False)
    return True


def run_uninstall(*, purge: bool, dry_run: bool, reload: bool, config_path: Path,
                  asterisk_conf: Path = Path("/etc/asterisk/asterisk.conf"), out: Callable[[str], None] = print) -> int:
    if os.geteuid() != 0 and not dry_run:
        raise InstallError("run `voiceassist uninstall` as root")
    paths = asterisk_paths(asterisk_conf)
    executable = Path(sys.prefix) / "bin" / "voiceassist"
    # No config is loaded: uninstall must work even with a config it would refuse to trust.
    installer = Installer(paths, config_path=config_path, executable=executable,
                          config=Config({n: dict(v) for n, v in DEFAULTS.items()}))
    if paths.legacy_manifest.exists() or paths.legacy_manifest.is_symlink():
        out(f"warning: ignoring {paths.legacy_manifest}: it is in a directory the {ASTERISK_USER} user can write "
            "(a forged list there must not decide what root deletes)")
    manifest = load_manifest(out)
    records = manifest if manifest is not None else _known_records(installer)
    # The data directories are voiceassist's by name, whoever made them (the asterisk user may
    # have, before the first install): --purge empties them too.
    records += [Record(str(d), DATA) for d in installer.data_directories() if str(d) not in {r.path for r in records}]
    allowed = installer.managed()
    usable: list[Record] = []
    for record in records:
        path = Path(os.path.abspath(record.path))
        kind = allowed.get(path)
        if kind is None or (kind != record.kind and not (kind == DATA and record.kind == DIRECTORY)):
            out(f"warning: ignoring the manifest's {record.path} ({record.kind}): not a path voiceassist install manages")
            continue
        usable.append(Record(str(path), record.kind, record.sha256))
    actions: list[tuple[str, Callable[[], bool]]] = []
    for dialplan_file in (installer.dialplan_file, installer.extensions_conf):
        if BEGIN_MARK in _read_text(dialplan_file):
            actions.append((f"remove voiceassist's lines from {dialplan_file}",
                            functools.partial(_remove_our_lines, dialplan_file)))
    recorded = {Path(r.path) for r in usable}
    for unit in (UNIT_PATH, PRUNE_TIMER_PATH):
        if unit in recorded and _lstat(unit) is not None and systemd_running():
            actions.append((f"stop and disable {unit.name}", functools.partial(_disable_unit, unit)))
    removed: set[str] = set()
    kept: set[str] = set()

    def file_action(record: Record) -> Callable[[], bool]:
        def act() -> bool:
            gone = _remove_file(record, purge, out)
            (removed if gone else kept).add(record.path)
            return gone
        return act

    def directory_action(record: Record) -> Callable[[], bool]:
        def act() -> bool:
            gone = _remove_directory(record, purge, out)
            (removed if gone else kept).add(record.path)
            return gone
        return act

    for record in sorted((r for r in usable if r.kind in (FILE, CONFIG, LOG)), key=lambda r: r.path):
        if record.kind in (CONFIG, LOG) and not purge:
            kept.add(record.path)
            continue
        if _lstat(Path(record.path)) is not None:
            actions.append((f"remove {record.path}", file_action(record)))
    for record in sorted((r for r in usable if r.kind in (DATA, DIRECTORY)), key=lambda r: len(Path(r.path).parts),
                         reverse=True):
        if _lstat(Path(record.path)) is None:
            continue
        if record.kind == DATA and purge:
            actions.append((f"remove directory {record.path} and its contents (as {ASTERISK_USER})",
                            directory_action(record)))
        else:
            actions.append((f"remove directory {record.path} if empty", directory_action(record)))
    if not actions:
        out("voiceassist is not installed; nothing to remove")
    try:
        for description, action in actions:
            out(("would " if dry_run else "") + description)
            if not dry_run:
                action()
    except UnsafePath as exc:
        raise InstallError(f"refused: {exc}") from None
    if not dry_run:
        if manifest is not None:
            # Only what we manage is kept for the next uninstall; ignored entries are dropped.
            save_manifest([r for r in usable if r.path not in removed and _lstat(Path(r.path)) is not None])
            try:
                with open_directory(MANIFEST_DIR.parent) as parent:
                    parent.rmdir(MANIFEST_DIR.name)
            except (FileNotFoundError, UnsafePath):
                pass
        if not purge and config_path.exists():
            out(f"kept {config_path} (uninstall --purge removes it)")
        if reload and actions and asterisk_running():
            out(f"dialplan reload: {reload_dialplan() or 'done'}")
    return 0
