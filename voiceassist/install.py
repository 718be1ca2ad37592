"""``voiceassist install`` / ``uninstall``: put voiceassist into an Asterisk or FreePBX system.

Paths come from ``/etc/asterisk/asterisk.conf`` (astagidir, astdatadir, astspooldir, astvarlibdir,
astlogdir), not from assumptions. Install only makes the changes still needed (so a second run
changes nothing), ``--dry-run`` prints them without making them, and a manifest records what was
added so that uninstall removes exactly that: our files, our dialplan block (between marker
lines; the admin's own lines are never touched), the directories we created if empty.
"""

from __future__ import annotations

import configparser
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from .errors import ConfigError, VoiceAssistError

PACKAGE = Path(__file__).resolve().parent
BEGIN_MARK = "; BEGIN voiceassist (added by `voiceassist install`; `voiceassist uninstall` removes it)"
END_MARK = "; END voiceassist"
ASTERISK_USER = "asterisk"
UNIT_PATH = Path("/etc/systemd/system/voiceassist.service")


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
    def manifest(self) -> Path:
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
    """A file shipped beside the package: installed under ``<prefix>/share/voiceassist`` by pip,
    or at the top of the source checkout (editable installs)."""
    for candidate in (Path(sys.prefix) / "share" / "voiceassist" / name, PACKAGE.parent / name):
        if candidate.exists():
            return candidate
    raise InstallError(f"{name} is missing from this voiceassist installation (looked in "
                       f"{Path(sys.prefix) / 'share' / 'voiceassist'} and {PACKAGE.parent})")


def dialplan_block() -> str:
    return f"{BEGIN_MARK}\n{shipped_file('extensions_custom.conf').read_text(encoding='utf-8').rstrip()}\n{END_MARK}\n"


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


def with_block(text: str) -> str:
    rest = without_block(text)
    separator = "" if not rest or rest.endswith("\n\n") else ("\n" if rest.endswith("\n") else "\n\n")
    return rest + separator + dialplan_block()


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


def systemd_unit(executable: Path, config: Path, writable: list[Path]) -> str:
    read_write = " ".join(f"-{path}" for path in writable)
    return f"""# voiceassist FastAGI server, written by `voiceassist install --fastagi`.
[Unit]
Description=voiceassist FastAGI server (AGI(agi://127.0.0.1:4573/voiceassist))
After=network.target asterisk.service mariadb.service postgresql.service

[Service]
Type=simple
User={ASTERISK_USER}
Group={ASTERISK_USER}
Environment=VOICEASSIST_CONFIG={config}
ExecStart={executable} serve
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


@dataclass
class Change:
    """One change install would make: shown by --dry-run, made otherwise."""

    description: str
    apply: Callable[[], None]
    created: list[str] = field(default_factory=list)   # paths to record in the manifest


def _owner_ids() -> tuple[int, int] | None:
    try:
        return pwd.getpwnam(ASTERISK_USER).pw_uid, grp.getgrnam(ASTERISK_USER).gr_gid
    except KeyError:
        return None


def _chown(path: Path) -> None:
    ids = _owner_ids()
    if ids is not None and os.geteuid() == 0:
        os.chown(path, *ids)


def _write(path: Path, text: str, mode: int, owned: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.voiceassist-tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, mode)
    if owned:
        _chown(temporary)
    os.replace(temporary, path)


class Installer:
    """Works out and makes the changes of ``voiceassist install`` (see the module docstring)."""

    def __init__(self, paths: AsteriskPaths, *, config_path: Path, executable: Path, fastagi: bool = False) -> None:
        self.paths = paths
        self.config_path = config_path
        self.executable = executable
        self.fastagi = fastagi
        self.dialplan_file = paths.etc / "extensions_custom.conf"

    def _directories(self) -> list[Path]:
        return [self.paths.spool / "voiceassist", self.paths.spool / "voiceassist-spool",
                self.paths.var_lib / "voiceassist"]

    def plan(self) -> list[Change]:
        changes: list[Change] = []
        ids = _owner_ids()
        for directory in self._directories():
            if not directory.is_dir():
                changes.append(Change(f"create directory {directory} (owner {ASTERISK_USER}, 0750)",
                                      lambda d=directory: self._make_directory(d), [str(directory)]))
            elif ids is not None and (directory.stat().st_uid, directory.stat().st_gid) != ids:
                # The asterisk user writes answers, spooled turns and the SQLite database here.
                changes.append(Change(f"give {directory} to {ASTERISK_USER}", lambda d=directory: _chown(d)))
        if not self.paths.sounds.is_dir():
            changes.append(Change(f"create directory {self.paths.sounds}",
                                  lambda: self._make_directory(self.paths.sounds, 0o755), [str(self.paths.sounds)]))
        prompts = sorted(p for p in shipped_file("sounds").glob("*.ulaw"))
        for prompt in prompts:
            target = self.paths.sounds / prompt.name
            if not target.exists() or target.read_bytes() != prompt.read_bytes():
                changes.append(Change(f"copy prompt {prompt.name} to {target}",
                                      lambda p=prompt, t=target: self._copy(p, t), [str(target)]))
        wrapper = self.paths.agi_bin / "voiceassist"
        default_config = self.config_path == Path("/etc/asterisk/voiceassist.conf")
        script = wrapper_script(self.executable, None if default_config else self.config_path)
        if not wrapper.exists() or wrapper.read_text(errors="replace") != script:
            changes.append(Change(f"write AGI wrapper {wrapper} (runs {self.executable} agi)",
                                  lambda: _write(wrapper, script, 0o755, owned=True), [str(wrapper)]))
        if not self.config_path.exists():
            changes.append(Change(f"write {self.config_path} from the commented template (0640 {ASTERISK_USER})",
                                  lambda: _write(self.config_path, self.config_template(), 0o640, owned=True),
                                  [str(self.config_path)]))
        log_file = self.paths.log / "voiceassist.log"
        if not log_file.exists():
            changes.append(Change(f"create log file {log_file} (owner {ASTERISK_USER})",
                                  lambda: _write(log_file, "", 0o640, owned=True), [str(log_file)]))
        current = self.dialplan_file.read_text(encoding="utf-8") if self.dialplan_file.exists() else ""
        if with_block(current) != current:
            verb = "update" if BEGIN_MARK in current else "add"
            changes.append(Change(f"{verb} the [voiceassist] contexts in {self.dialplan_file} (between marker lines)",
                                  lambda: self._write_dialplan(), []))
        if self.fastagi:
            unit = systemd_unit(self.executable, self.config_path, [*self._directories(), self.paths.log])
            if not UNIT_PATH.exists() or UNIT_PATH.read_text() != unit:
                changes.append(Change(f"write systemd unit {UNIT_PATH} (voiceassist serve as {ASTERISK_USER})",
                                      lambda: _write(UNIT_PATH, unit, 0o644), [str(UNIT_PATH)]))
        return changes

    def config_template(self) -> str:
        template = Template((PACKAGE / "templates" / "voiceassist.conf").read_text(encoding="utf-8"))
        return template.substitute(
            answer_dir=self.paths.spool / "voiceassist",
            spool_dir=self.paths.spool / "voiceassist-spool",
            database_url=f"sqlite:///{self.paths.var_lib / 'voiceassist' / 'voiceassist.db'}",
            log_file=self.paths.log / "voiceassist.log")

    def _make_directory(self, directory: Path, mode: int = 0o750) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, mode)
        _chown(directory)

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, 0o644)
        _chown(target)

    def _write_dialplan(self) -> None:
        current = self.dialplan_file.read_text(encoding="utf-8") if self.dialplan_file.exists() else ""
        existed = self.dialplan_file.exists()
        _write(self.dialplan_file, with_block(current), 0o640 if not existed else self.dialplan_file.stat().st_mode & 0o777,
               owned=not existed)


def load_manifest(paths: AsteriskPaths) -> dict[str, list[str]]:
    try:
        return json.loads(paths.manifest.read_text())
    except FileNotFoundError:
        return {"created": []}
    except ValueError as exc:
        raise InstallError(f"{paths.manifest} is damaged ({exc}); remove voiceassist's files by hand") from None


def save_manifest(paths: AsteriskPaths, manifest: dict[str, list[str]]) -> None:
    _write(paths.manifest, json.dumps(manifest, indent=2) + "\n", 0o644)


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


def run_install(*, config_path: Path, dry_run: bool, reload: bool, fastagi: bool,
                asterisk_conf: Path = Path("/etc/asterisk/asterisk.conf"), out: Callable[[str], None] = print) -> int:
    if os.geteuid() != 0 and not dry_run:
        raise InstallError("run `voiceassist install` as root (it writes to /etc/asterisk and Asterisk's directories); "
                           "--dry-run shows the changes without root")
    paths = asterisk_paths(asterisk_conf)
    executable = Path(sys.prefix) / "bin" / "voiceassist"
    installer = Installer(paths, config_path=config_path, executable=executable, fastagi=fastagi)
    changes = installer.plan()
    if _owner_ids() is None:
        out(f"warning: no '{ASTERISK_USER}' user here; files stay owned by root")
    if not changes:
        out("voiceassist is installed; nothing to change")
    manifest = load_manifest(paths)
    for change in changes:
        out(("would " if dry_run else "") + change.description)
        if not dry_run:
            change.apply()
            for path in change.created:
                if path not in manifest["created"]:
                    manifest["created"].append(path)
            save_manifest(paths, manifest)
    dialplan_changed = any("contexts in" in c.description for c in changes)
    if reload and dialplan_changed and not dry_run:
        if asterisk_running():
            out(f"dialplan reload: {reload_dialplan() or 'done'}")
        else:
            out("Asterisk is not running: the dialplan loads when it starts")
    elif dialplan_changed:
        out(("would run" if dry_run else "run") + ' `asterisk -rx "dialplan reload"`')
    if fastagi and not dry_run and any(str(UNIT_PATH) in c.description for c in changes):
        if systemd_running():
            subprocess.run(["systemctl", "daemon-reload"], check=False)
            subprocess.run(["systemctl", "enable", "--now", "voiceassist.service"], check=False)
            out("systemctl enable --now voiceassist.service")
        else:
            out(f"systemd is not running here: start the server with  runuser -u {ASTERISK_USER} -- "
                f"{executable} --config {config_path} serve")
    out("")
    out(FREEPBX_STEPS.format(context="voiceassist-fastagi" if fastagi else "voiceassist"))
    out("Then: `voiceassist doctor`, and dial 8008.")
    return 0


def run_uninstall(*, purge: bool, dry_run: bool, reload: bool, config_path: Path,
                  asterisk_conf: Path = Path("/etc/asterisk/asterisk.conf"), out: Callable[[str], None] = print) -> int:
    if os.geteuid() != 0 and not dry_run:
        raise InstallError("run `voiceassist uninstall` as root")
    paths = asterisk_paths(asterisk_conf)
    manifest = load_manifest(paths)
    dialplan_file = paths.etc / "extensions_custom.conf"
    actions: list[tuple[str, Callable[[], None]]] = []
    if dialplan_file.exists() and BEGIN_MARK in dialplan_file.read_text(encoding="utf-8"):
        def remove_block() -> None:
            text = dialplan_file.read_text(encoding="utf-8")
            _write(dialplan_file, without_block(text), dialplan_file.stat().st_mode & 0o777)
        actions.append((f"remove the [voiceassist] contexts from {dialplan_file}", remove_block))
    created = [Path(p) for p in manifest["created"]]
    if UNIT_PATH in created and UNIT_PATH.exists() and systemd_running():
        actions.append(("stop and disable voiceassist.service",
                        lambda: subprocess.run(["systemctl", "disable", "--now", "voiceassist.service"], check=False)))
    keep = set() if purge else {config_path}
    for path in sorted((p for p in created if not p.is_dir()), key=str):
        if path.exists() and path not in keep:
            actions.append((f"remove {path}", lambda p=path: p.unlink(missing_ok=True)))
    # Deepest first; only when empty (our data in them stays unless --purge).
    for path in sorted((p for p in created if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if purge:
            actions.append((f"remove directory {path} and its contents", lambda p=path: shutil.rmtree(p, ignore_errors=True)))
        else:
            actions.append((f"remove directory {path} if empty", lambda p=path: _rmdir_if_empty(p)))
    if not actions:
        out("voiceassist is not installed; nothing to remove")
    for description, action in actions:
        out(("would " if dry_run else "") + description)
        if not dry_run:
            action()
    if not dry_run:
        remaining = [str(p) for p in created if p.exists()]
        if remaining:
            save_manifest(paths, {"created": remaining})
        else:
            paths.manifest.unlink(missing_ok=True)
            _rmdir_if_empty(paths.manifest.parent)
        if not purge and config_path.exists():
            out(f"kept {config_path} (uninstall --purge removes it)")
        if reload and actions and asterisk_running():
            out(f"dialplan reload: {reload_dialplan() or 'done'}")
    return 0


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
