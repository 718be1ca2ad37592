"""The real-Asterisk rig: a Debian sid chroot with Asterisk 22, driven as root with ``asterisk -rx``.

Layout on the host (all under the git-ignored ``.rig/``):

* ``.rig/chroot``: the chroot (built by ``build-chroot.sh``; reused).
* ``.rig/shared``: bind-mounted into the chroot *at the same absolute path*, so a path written by
  Asterisk (recordings) or by a FastAGI server on the host (answers, database) means the same file
  on both sides. It holds Asterisk's spool dir, the SQLite database, the log and test audio.

Process AGI runs our package from a venv inside the chroot (``/opt/voiceassist/venv``), installed
editable from the repository, which is bind-mounted at ``/opt/voiceassist/src``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from .ami import AMIClient

REPO = Path(__file__).resolve().parents[2]
RIG = Path(os.environ.get("VOICEASSIST_RIG_DIR", REPO / ".rig"))
CHROOT = RIG / "chroot"
SHARED = RIG / "shared"
SRC_IN_CHROOT = "/opt/voiceassist/src"
VENV_IN_CHROOT = "/opt/voiceassist/venv"
MODULES_DIR = "/usr/lib/x86_64-linux-gnu/asterisk/modules"
SOUNDS_IN_CHROOT = "/usr/share/asterisk/sounds"
CONFIG_IN_CHROOT = "/etc/voiceassist/voiceassist.conf"

MODULES = """
[modules]
autoload = no
load => res_timing_timerfd.so
load => pbx_config.so
load => res_speech.so
load => res_agi.so
load => res_clioriginate.so
load => app_mixmonitor.so
load => app_waitforsilence.so
load => app_playback.so
load => app_record.so
load => app_stack.so
load => app_exec.so
load => app_verbose.so
load => app_userevent.so
load => app_system.so
load => func_base64.so
load => func_callerid.so
load => func_channel.so
load => func_cut.so
load => func_dialplan.so
load => func_global.so
load => func_logic.so
load => func_strings.so
load => format_wav.so
load => format_pcm.so
load => format_sln.so
load => codec_ulaw.so
; the real-time conversation: AudioSocket (app and channel), Asterisk's WebSocket channel (its
; websocket_client.conf is read through sorcery's config wizard), Dial and the two-party bridge
; it needs
load => res_audiosocket.so
load => app_audiosocket.so
load => chan_audiosocket.so
load => res_sorcery_config.so
load => res_http_websocket.so
load => res_websocket_client.so
load => chan_websocket.so
load => app_dial.so
; the console's live transcripts of calls between people: ChanSpy on an AudioSocket channel
load => app_chanspy.so
load => bridge_simple.so
load => codec_resample.so
; call actions: a transfer's busy target, messages to a voicemail box, and the box's own prompts
load => app_voicemail.so
load => app_controlplayback.so
load => app_senddtmf.so
load => format_gsm.so
load => codec_gsm.so
"""

# The mailbox the call-action tests leave messages in (VoiceMail(100@default)); messages land in
# <spool>/voicemail/default/100/INBOX, in the rig's shared directory.
VOICEMAIL = """[general]
format = wav
attach = no
maxsilence = 3
minsecs = 1

[default]
100 => 1234,Rig Test Box
"""

WEBSOCKET_CLIENT = """[voiceassist]
type = websocket_client
uri = ws://127.0.0.1:4581/media
protocols = media
connection_type = per_call_config
connection_timeout = 500
reconnect_attempts = 2
reconnect_interval = 200
"""

# pip inside the chroot: the host's find-links do not exist there; the system CA store does.
PIP_ENV = ["env", "-u", "PIP_FIND_LINKS", "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_CERT=/etc/ssl/certs/ca-certificates.crt"]


def fresh_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` as a new plain file: a link or FIFO left at ``target`` (by a
    security test that was interrupted) is removed, never followed."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        target.unlink()
    shutil.copy(source, target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(message: str) -> None:
    print(f"[rig] {message}", file=sys.stderr, flush=True)


class AsteriskRig:
    """Build, configure, start and stop the chroot's Asterisk; place calls into it."""

    def __init__(self) -> None:
        self.chroot = CHROOT
        self.shared = SHARED
        self.process: subprocess.Popen[bytes] | None = None
        self.ami: AMIClient | None = None
        self.ami_port = free_port()
        self._mounts: list[Path] = []
        self.user = ""

    # -- paths ----------------------------------------------------------------------------------
    def host_path(self, chroot_path: str) -> Path:
        return self.chroot / chroot_path.lstrip("/")

    # -- build ----------------------------------------------------------------------------------
    def build(self) -> None:
        subprocess.run(["bash", str(REPO / "harness/rig/build-chroot.sh"), str(self.chroot)], check=True)

    def _mount(self, *args: str, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        if subprocess.run(["mountpoint", "-q", str(target)]).returncode != 0:
            subprocess.run(["mount", *args, str(target)], check=True)
        self._mounts.append(target)

    def mount(self) -> None:
        self.shared.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "proc", "proc", target=self.chroot / "proc")
        self._mount("--bind", str(self.shared), target=self.host_path(str(self.shared)))
        self._mount("--bind", str(REPO), target=self.host_path(SRC_IN_CHROOT))

    def unmount(self) -> None:
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(target)], check=False)
        self._mounts.clear()

    def install_package(self) -> None:
        """Make the chroot's venv run this checkout (editable); reinstall deps when setup.cfg changes."""
        key = hashlib.sha256((REPO / "setup.cfg").read_bytes()).hexdigest()[:12]
        stamp = self.host_path(f"{VENV_IN_CHROOT}/.voiceassist-{key}")
        if stamp.exists():
            return
        log("installing voiceassist[google,openai,web] into the chroot's venv (first run: about a minute)")
        # This machine may reach PyPI through a TLS proxy whose CA the host trusts: trust the same
        # local CAs inside the chroot (Python 3.13+ verifies strictly, pip uses the system store).
        local_cas = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        if local_cas:
            target = self.host_path("/usr/local/share/ca-certificates")
            target.mkdir(parents=True, exist_ok=True)
            for ca in local_cas:
                shutil.copy(ca, target / ca.name)
            subprocess.run(["chroot", str(self.chroot), "update-ca-certificates"], check=True, capture_output=True)
        shutil.copy("/etc/resolv.conf", self.host_path("/etc/resolv.conf"))
        run = ["chroot", str(self.chroot), *PIP_ENV]
        if not self.host_path(f"{VENV_IN_CHROOT}/bin/python").exists():
            subprocess.run([*run, "python3", "-m", "venv", VENV_IN_CHROOT], check=True)
        subprocess.run([*run, f"{VENV_IN_CHROOT}/bin/pip", "install", "-q", "-e", f"{SRC_IN_CHROOT}[google,openai,web]"],
                       check=True)
        stamp.touch()

    def reinstall_editable(self) -> None:
        """Back to this checkout, editable (after a test installed a copy the way the README does)."""
        subprocess.run(["chroot", str(self.chroot), *PIP_ENV, f"{VENV_IN_CHROOT}/bin/pip", "install", "-q",
                        "--no-deps", "-e", SRC_IN_CHROOT], check=True, capture_output=True)

    # -- configure --------------------------------------------------------------------------------
    def configure(self, voiceassist_conf: str, rig_dialplan: str) -> None:
        etc = self.host_path("/etc/asterisk")
        spool = self.shared / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        (etc / "asterisk.conf").write_text(f"""[directories]
astcachedir => /var/cache/asterisk
astetcdir => /etc/asterisk
astmoddir => {MODULES_DIR}
astvarlibdir => /var/lib/asterisk
astdbdir => /var/lib/asterisk
astkeydir => /var/lib/asterisk
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => {spool}
astrundir => /var/run/asterisk
astlogdir => /var/log/asterisk
astsbindir => /usr/sbin

[options]
verbose = 3
transmit_silence = no
""")
        (etc / "modules.conf").write_text(MODULES)
        (etc / "logger.conf").write_text("[general]\n[logfiles]\nfull => notice,warning,error,verbose(3)\n"
                                         "console => notice,warning,error\n")
        (etc / "manager.conf").write_text(f"""[general]
enabled = yes
; events carry Asterisk's own time (the benchmarks measure gaps between them)
timestampevents = yes
bindaddr = 127.0.0.1
port = {self.ami_port}

[rig]
secret = rig
read = all
write = all
""")
        (etc / "extensions.conf").write_text("""[general]
static = yes
writeprotect = no

[globals]

#include extensions_custom.conf
#include extensions_rig.conf
""")
        # The real-time tests' WebSocket server (port 4581: [live] transport websocket): the section
        # our route dials, as the README tells an admin to add it.
        (etc / "websocket_client.conf").write_text(WEBSOCKET_CLIENT)
        (etc / "chan_websocket.conf").write_text("[global]\ncontrol_message_format = json\n")
        (etc / "voicemail.conf").write_text(VOICEMAIL)
        fresh_copy(REPO / "extensions_custom.conf", etc / "extensions_custom.conf")
        (etc / "extensions_rig.conf").write_text(rig_dialplan)
        self.write_voiceassist_conf(voiceassist_conf)
        # Our prompts, where `voiceassist install` puts them on a real system. Whatever an earlier,
        # interrupted test planted there (links, a linked directory) goes first.
        # English in sounds/custom/voiceassist, the other languages in sounds/<language>/custom/voiceassist.
        languages = [""] + sorted(d.name for d in (REPO / "sounds").iterdir() if d.is_dir())
        for language in languages:
            sounds = self.host_path(f"{SOUNDS_IN_CHROOT}/{language}/custom/voiceassist".replace("//", "/"))
            if sounds.is_symlink():
                sounds.unlink()
            sounds.mkdir(parents=True, exist_ok=True)
            for directory in (sounds, sounds.parent, sounds.parent.parent):
                directory.chmod(0o755)  # Asterisk (running as asterisk in some tests) must reach the prompts
            for prompt in (REPO / "sounds" / language).glob("*.ulaw"):
                fresh_copy(prompt, sounds / prompt.name)
        agi_bin = self.host_path("/usr/share/asterisk/agi-bin")
        agi_bin.mkdir(parents=True, exist_ok=True)
        fresh_copy(REPO / "agi-bin/voiceassist", agi_bin / "voiceassist")
        (agi_bin / "voiceassist").chmod(0o755)

    def write_voiceassist_conf(self, text: str) -> None:
        """The process-AGI config, where voiceassist looks by default (root-only directory: Asterisk
        runs as root here, and a root process refuses a config others could write)."""
        conf = self.host_path(CONFIG_IN_CHROOT)
        conf.parent.mkdir(parents=True, exist_ok=True)
        os.chown(conf.parent, 0, 0)
        conf.parent.chmod(0o755)
        # A new root-owned file: whatever an earlier, interrupted test left here (handed to the
        # asterisk user, or a link) is replaced, never written through.
        if conf.is_symlink() or conf.exists():
            conf.unlink()
        conf.write_text(text)
        os.chown(conf, 0, 0)
        conf.chmod(0o644)

    # -- run --------------------------------------------------------------------------------------
    def start(self, user: str = "") -> None:
        """Start Asterisk as root, or as ``user`` (``asterisk``: as on FreePBX, AGIs then run as that
        user; the directories Asterisk writes are handed to it first)."""
        for stale in ("/var/run/asterisk/asterisk.ctl", "/var/run/asterisk/asterisk.pid"):
            self.host_path(stale).unlink(missing_ok=True)
        self.host_path("/var/run/asterisk").mkdir(parents=True, exist_ok=True)
        # Tests look for their call's lines in the log: none may come from an earlier run.
        self.host_path("/var/log/asterisk/full").unlink(missing_ok=True)
        self._console = console = open(self.shared / "asterisk-console.log", "ab")
        # Plain `asterisk -f` as root: -U root would drop root's capabilities (file overrides).
        command = ["chroot", str(self.chroot), "asterisk", "-f"]
        if user:
            self._hand_over_directories(user)
            command += ["-U", user, "-G", user]
        self.user = user
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"asterisk exited with {self.process.returncode}; see {self.shared}/asterisk-console.log")
            result = subprocess.run(["chroot", str(self.chroot), "asterisk", "-rx", "core waitfullybooted"],
                                    capture_output=True, text=True)
            if result.returncode == 0 and "fully booted" in result.stdout.lower():
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("asterisk did not boot within 60 s")
        self.ami = AMIClient("127.0.0.1", self.ami_port, "rig", "rig")
        log(self.cli("core show version").strip())

    def _hand_over_directories(self, user: str) -> None:
        ids = subprocess.run(["chroot", str(self.chroot), "id", "-u", user], capture_output=True, text=True, check=True)
        uid = int(ids.stdout)
        for directory in ("/var/run/asterisk", "/var/log/asterisk", "/var/lib/asterisk", "/var/cache/asterisk",
                          "/var/spool/asterisk"):
            subprocess.run(["chown", "-R", f"{uid}:{uid}", str(self.host_path(directory))], check=True)
        # Asterisk's spool dir and the test caller's recordings live in the shared directory.
        for directory in (self.shared / "spool", self.shared / "calls"):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, uid, uid)

    def restart(self, user: str = "") -> None:
        self.stop()
        self.start(user)

    def stop(self) -> None:
        if self.ami is not None:
            self.ami.close()
            self.ami = None
        if self.process is not None and self.process.poll() is None:
            subprocess.run(["chroot", str(self.chroot), "asterisk", "-rx", "core stop now"],
                           capture_output=True, timeout=30)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if getattr(self, "_console", None) is not None:
            self._console.close()
            self._console = None

    def cli(self, command: str) -> str:
        result = subprocess.run(["chroot", str(self.chroot), "asterisk", "-rx", command],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0 or result.stdout.startswith("No such command"):
            raise RuntimeError(f"asterisk -rx {command!r} failed: {result.stderr or result.stdout}")
        return result.stdout

    def wait_for_log(self, pattern: str, timeout: float = 10) -> list[str]:
        """All matches of ``pattern`` in the ``full`` log, waiting for Asterisk's logger thread to
        write them (it logs asynchronously, so the last lines of a call lag behind its hangup)."""
        import re

        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.full_log())
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def full_log(self) -> str:
        path = self.host_path("/var/log/asterisk/full")
        return path.read_text(errors="replace") if path.exists() else ""
