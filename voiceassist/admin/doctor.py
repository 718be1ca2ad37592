"""``voiceassist doctor``: one line per check with OK/WARN/FAIL and, when not OK, how to fix it.

Nothing here costs money unless ``--online`` is given, which makes one tiny real request to each
configured provider. Exit status 1 if any check FAILs.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import DEFAULT_CONFIG_PATH, LEGACY_CONFIG_PATH, Config, default_config_path
from ..errors import UntrustedFile, VoiceAssistError
from ..system.shipped import shipped_path
from ..text.languages import primary

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _access(path: Path, user: str, want: int) -> bool:
    """Whether ``user`` may read (4) / write (2) / execute (1) ``path`` by its mode bits."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False
    info = path.stat()
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {entry.pw_gid}
    if entry.pw_uid == 0:
        return True
    if info.st_uid == entry.pw_uid:
        return bool((info.st_mode >> 6) & want == want)
    if info.st_gid in groups:
        return bool((info.st_mode >> 3) & want == want)
    return bool(info.st_mode & want == want)


def _reachable(path: Path, user: str) -> bool:
    """Every directory above ``path`` can be entered by ``user``."""
    return all(_access(parent, user, 1) for parent in reversed(path.parents) if parent.exists())


class Doctor:
    def __init__(self, config_path: Path | None, *, online: bool, asterisk_user: str = "asterisk") -> None:
        self.config_path = Path(config_path or os.environ.get("VOICEASSIST_CONFIG") or default_config_path())
        self.online = online
        self.user = asterisk_user
        self.config: Config | None = None

    def checks(self) -> Iterator[Check]:
        yield self.python()
        yield from self.configuration()
        if self.config is None:
            return
        yield self.ffmpeg()
        yield from self.as_service_user()
        yield from self.asterisk_files()
        yield self.dialplan()
        yield from self.live_transport()
        yield from self.action_modules()
        yield from self.tools()
        yield self.fastagi()
        yield from self.web_console()

    # -- individual checks --------------------------------------------------------------------
    def python(self) -> Check:
        version = ".".join(map(str, sys.version_info[:3]))
        if sys.prefix == sys.base_prefix:
            return Check("python", WARN, f"Python {version} outside a venv ({sys.prefix})",
                         "install into a venv (Debian 12 refuses system-wide pip: PEP 668): python3 -m venv /opt/voiceassist/venv")
        return Check("python", OK, f"Python {version} in venv {sys.prefix}")

    def configuration(self) -> Iterator[Check]:
        path = self.config_path
        if not path.exists():
            yield Check("config", FAIL, f"{path} does not exist", "run `voiceassist install` (writes a commented template)")
            return
        try:
            from ..providers import load_full_config

            # Run as root this refuses a config or knowledge file others could write (trust.py).
            self.config = load_full_config(path)
        except UntrustedFile as exc:
            detail = str(exc).split("; fix: ")[0]
            yield Check("config", FAIL, detail, exc.fix)
            return
        except VoiceAssistError as exc:
            yield Check("config", FAIL, str(exc), f"fix {path}")
            return
        yield Check("config", OK, f"{path} parses")
        if path == LEGACY_CONFIG_PATH:
            yield Check("config location", WARN, f"{path} is in /etc/asterisk, which `fwconsole chown` hands to the "
                        f"{self.user} user", f"install -d -o root -g {self.user} -m 0750 {DEFAULT_CONFIG_PATH.parent} "
                        f"&& mv {path} {DEFAULT_CONFIG_PATH.parent}/")
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o007:
            yield Check("config permissions", FAIL, f"{path} is {mode:04o}: every local user can read its API keys",
                        f"chmod 0640 {path}; chown root:{self.user} {path}")
        elif info.st_uid != 0 or mode & 0o020:
            yield Check("config permissions", FAIL, f"{path} can be changed by users other than root "
                        f"(owner uid {info.st_uid}, {mode:04o}); it names programs root's commands run",
                        f"chown root:{self.user} {path}; chmod 0640 {path}")
        elif self._user_exists() and not _access(path, self.user, 4):
            yield Check("config permissions", FAIL, f"{path} is not readable by the {self.user} user",
                        f"chown root:{self.user} {path}; chmod 0640 {path}")
        else:
            yield Check("config permissions", OK, f"{mode:04o}, owner root")

    def as_service_user(self) -> Iterator[Check]:
        """The providers, database and spool checks, run as the asterisk user (in a forked child
        when doctor runs as root): they read that user's files (SQLite database, spool,
        credentials), which root must not open, and they see what the calls will see."""
        from ..system.privileges import PrivilegeError, run_as_service_user

        def checks() -> list[dict[str, str]]:
            return [asdict(c) for c in (*self.providers(), *self.database())]

        try:
            results = run_as_service_user(checks, self.user)
        except PrivilegeError as exc:
            yield Check("database", FAIL, f"the checks run as {self.user} failed: {exc}", "voiceassist doctor --json")
            return
        for result in results:
            yield Check(**result)

    def ffmpeg(self) -> Check:
        assert self.config is not None
        name = self.config.section("audio").get("ffmpeg")
        found = shutil.which(name)
        if not found:
            return Check("ffmpeg", FAIL, f"{name!r} not found (converts answers to 8 kHz μ-law)", "apt-get install ffmpeg")
        return Check("ffmpeg", OK, found)

    def providers(self) -> Iterator[Check]:
        assert self.config is not None
        from ..providers import create_chain

        for capability in ("stt", "llm", "tts"):
            try:
                chain = create_chain(capability, self.config)
            except VoiceAssistError as exc:
                yield Check(f"{capability} providers", FAIL, str(exc), f"fix [{capability}] provider")
                continue
            for name in chain.names:
                try:
                    provider = chain.provider(name)
                except VoiceAssistError as exc:
                    status = FAIL if len(chain.names) == 1 else WARN
                    yield Check(f"{capability} {name}", status, str(exc), "set the credentials named above")
                    continue
                if not self.online:
                    yield Check(f"{capability} {name}", OK, "configured (not called; --online makes one tiny request)")
                    continue
                yield self._online(capability, name, provider)

    def _online(self, capability: str, name: str, provider: object) -> Check:
        try:
            if capability == "stt":
                from ..types import Recording

                provider.transcribe(Recording(pcm=b"\x00\x00" * 4000, sample_rate=8000))  # type: ignore[attr-defined]
            elif capability == "llm":
                from ..types import Conversation

                provider.reply(Conversation("Reply with the single word OK.", (), "OK?"))  # type: ignore[attr-defined]
            else:
                provider.synthesize("OK")  # type: ignore[attr-defined]
        except VoiceAssistError as exc:
            return Check(f"{capability} {name}", FAIL, f"request failed: {exc}", "check the key, model and endpoint")
        return Check(f"{capability} {name}", OK, "answered a test request")

    def database(self) -> Iterator[Check]:
        assert self.config is not None
        from ..storage.database_url import database_url
        from ..storage.journal import Journal

        try:
            url = database_url(self.config.section("database"))
        except VoiceAssistError as exc:
            yield Check("database", FAIL, str(exc), "fix [database] url")
            return
        if url.startswith("sqlite:///"):
            # Never create the file here: made by root, the asterisk user could not write it.
            path = Path(url[len("sqlite:///"):].split("?")[0])
            if not path.exists():
                where = path.parent
                ok = where.is_dir() and (not self._user_exists() or _access(where, self.user, 3))
                yield Check("database", OK if ok else FAIL, f"{path} is created on the first call" if ok else
                            f"{where} is missing or not writable by {self.user}", "" if ok else "voiceassist install")
                return
            if self._user_exists() and not _access(path, self.user, 6):
                yield Check("database", FAIL, f"{path} is not writable by {self.user}", f"chown {self.user}: {path}")
                return
        try:
            journal = Journal(self.config)
            store = journal.store()
            revision = store.schema_revision()
        except VoiceAssistError as exc:
            yield Check("database", FAIL, str(exc), "check [database] url and that the server runs")
            return
        from ..storage.migrate import head_revision

        head = head_revision()
        if revision is None:
            yield Check("database", OK, f"{store.where} reachable; tables are created on the first call")
        elif revision != head:
            yield Check("database", FAIL, f"{store.where}: schema at revision {revision}, this version needs {head}",
                        "voiceassist db upgrade")
        else:
            yield Check("database", OK, f"{store.where}, schema {revision}")
        pending = len(journal.spool)
        if pending:
            yield Check("spool", WARN, f"{pending} turns wait in {journal.spool.directory}", "voiceassist db flush")
        else:
            yield Check("spool", OK, f"{journal.spool.directory} empty")

    def _language_prompts(self, sounds_in: Callable[[str], Path], shipped: set[str]) -> Iterator[Check]:
        """Each configured language other than English: its prompts where Playback looks for a
        channel in it (else its callers hear the English ones)."""
        if self.config is None:
            return
        general = self.config.general
        for tag in dict.fromkeys((general.language, *general.languages)):
            code = primary(tag)
            if code == "en":
                continue
            directory = sounds_in(code)
            found = {p.name for p in directory.glob("*.ulaw")} if directory.is_dir() else set()
            if not found:
                yield Check(f"sounds {code}", WARN, f"no prompts in {directory}: {tag} callers hear the English ones",
                            "voiceassist install (it has de and es), or record them there with the English names")
            elif missing := shipped - found:
                yield Check(f"sounds {code}", WARN, f"{len(missing)} prompts missing in {directory} (English plays instead)",
                            "voiceassist install")
            else:
                yield Check(f"sounds {code}", OK, str(directory))

    def asterisk_files(self) -> Iterator[Check]:
        from .install import asterisk_paths, wrapper_target

        paths = asterisk_paths()
        prompts = sorted(paths.sounds.glob("*.ulaw")) if paths.sounds.is_dir() else []
        shipped_dir = shipped_path("sounds")
        shipped = {p.name for p in shipped_dir.glob("*.ulaw")} if shipped_dir else set()
        missing = shipped - {p.name for p in prompts}
        if missing or not prompts:
            yield Check("sounds", FAIL, f"{len(missing)} of our {len(shipped)} prompts missing in {paths.sounds}",
                        "voiceassist install")
        elif self._user_exists() and not all(_access(p, self.user, 4) for p in prompts):
            yield Check("sounds", FAIL, f"prompts in {paths.sounds} not readable by {self.user}", f"chmod 0644 {paths.sounds}/*")
        elif self._user_exists() and not _reachable(prompts[0], self.user):
            yield Check("sounds", FAIL, f"{paths.sounds} (or a directory above it) cannot be entered by {self.user}",
                        f"chmod 0755 {paths.sounds}")
        else:
            yield Check("sounds", OK, str(paths.sounds))
        yield from self._language_prompts(paths.sounds_in, shipped)
        wrapper = paths.agi_bin / "voiceassist"
        if not wrapper.exists():
            yield Check("agi wrapper", FAIL, f"{wrapper} missing", "voiceassist install")
        elif self._user_exists() and not (_access(wrapper, self.user, 5) and _reachable(wrapper, self.user)):
            yield Check("agi wrapper", FAIL, f"{wrapper} not executable by {self.user}", f"chmod 0755 {wrapper}")
        else:
            from ..system.safe_files import read_plain

            target = wrapper_target((read_plain(wrapper) or b"").decode(errors="replace"))  # never through a link
            if target and not Path(target).exists():
                yield Check("agi wrapper", FAIL, f"{wrapper} runs {target}, which does not exist", "voiceassist install")
            else:
                yield Check("agi wrapper", OK, f"{wrapper} -> {target or '?'}")
        assert self.config is not None
        for label, directory in (("answer dir", Path(self.config.section("general").get("answer_dir"))),
                                 ("spool dir", Path(self.config.section("database").get("spool_dir")))):
            if not directory.is_dir():
                yield Check(label, FAIL, f"{directory} missing", "voiceassist install")
            elif self._user_exists() and not _access(directory, self.user, 3):
                yield Check(label, FAIL, f"{directory} not writable by {self.user}", f"chown {self.user}: {directory}")
            else:
                yield Check(label, OK, str(directory))

    def dialplan(self) -> Check:
        from ..asterisk.dialplan import fastagi_url

        fix = 'voiceassist install; asterisk -rx "dialplan reload"'
        try:
            result = subprocess.run(["asterisk", "-rx", "dialplan show 8008@voiceassist"], capture_output=True,
                                    text=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Check("dialplan", WARN, f"cannot ask Asterisk: {exc}", "is Asterisk installed and running?")
        output = result.stdout + result.stderr
        if result.returncode != 0 or "Unable to connect" in output:
            return Check("dialplan", WARN, "Asterisk is not running (cannot check the dialplan)", "systemctl start asterisk")
        if "There is no existence" in output or "voiceassist-flow" not in output:
            from .install import asterisk_paths, includes_custom

            extensions = asterisk_paths().etc / "extensions.conf"
            try:
                included = includes_custom(extensions.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                included = True
            why = "" if included else f" ({extensions} does not #include extensions_custom.conf)"
            return Check("dialplan", FAIL, f"context [voiceassist] with 8008 is not loaded{why}", fix)
        assert self.config is not None
        wanted = fastagi_url(self.config)
        fastagi = subprocess.run(["asterisk", "-rx", "dialplan show 8008@voiceassist-fastagi"], capture_output=True,
                                 text=True, timeout=15).stdout
        loaded = re.search(r"Set\(VA_AGI=([^)]*)\)", fastagi)
        if loaded is None:
            return Check("dialplan", FAIL, "context [voiceassist-fastagi] with 8008 is not loaded", fix)
        if loaded.group(1) != wanted:
            shown = re.sub(r"secret=[^&]*", "secret=***", loaded.group(1))
            return Check("dialplan", FAIL, f"[voiceassist-fastagi] dials {shown}, but [fastagi] in {self.config_path} "
                         f"says {re.sub(r'secret=[^&]*', 'secret=***', wanted)}", fix)
        return Check("dialplan", OK, f"8008@voiceassist loaded; FastAGI variant dials {wanted.split('?')[0]}")

    def live_transport(self) -> Iterator[Check]:
        """What ``[live] transport`` needs of Asterisk: its modules loaded and, for websocket, the
        connection the route dials in websocket_client.conf."""
        from .install import live_settings

        assert self.config is not None
        live = live_settings(self.config)
        if live.transport == "websocket":
            yield self.asterisk_modules("websocket", ("res_http_websocket.so", "res_websocket_client.so",
                                                      "chan_websocket.so"), optional=())
            yield self.websocket_client()
        else:
            yield self.asterisk_modules("audiosocket", ("res_audiosocket.so", "app_audiosocket.so"),
                                        optional=("chan_audiosocket.so",) if live.wideband else ())

    def tools(self) -> Iterator[Check]:
        """The business's HTTP tools ([tools] file): readable, trusted, each well declared."""
        assert self.config is not None
        if not self.config.tools.file:
            return
        from ..call.tools import configured_tools

        try:
            names = [tool.name for tool in configured_tools(self.config)]
        except VoiceAssistError as exc:
            yield Check("tools", FAIL, str(exc), f"fix {self.config.tools.file} (see the README's tools section)")
            return
        yield Check("tools", OK, f"{len(names)} tools in {self.config.tools.file}: {', '.join(names) or 'none'}")

    def action_modules(self) -> Iterator[Check]:
        """What the call actions need of Asterisk: ControlPlayback for the keys during answers,
        Dial for transfers, VoiceMail for messages to a mailbox."""
        assert self.config is not None
        actions = self.config.actions
        if actions.key_operator or actions.key_repeat or actions.key_skip:
            yield self.asterisk_modules("controlplayback", ("app_controlplayback.so",), optional=(),
                                        purpose="keys during answers cannot work ([actions] key_*)")
        if self.config.destinations.entries:
            yield self.asterisk_modules("app_dial", ("app_dial.so",), optional=(),
                                        purpose="the assistant cannot transfer callers ([destinations])")
        if actions.take_message == "voicemail":
            yield self.asterisk_modules("app_voicemail", ("app_voicemail.so",), optional=(),
                                        purpose="messages cannot reach the mailbox ([actions] take_message)")

    def asterisk_modules(self, like: str, required: tuple[str, ...], optional: tuple[str, ...],
                         purpose: str = "") -> Check:
        """The modules are loaded and running (``module show like``). ``optional``: missing is a WARN
        (chan_audiosocket: only wideband phones' real-time calls need it). ``purpose``: what does not
        work without them (default: the real-time route's audio)."""
        name = f"{like} modules"
        try:
            result = subprocess.run(["asterisk", "-rx", f"module show like {like}"], capture_output=True, text=True,
                                    timeout=15)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Check(name, WARN, f"cannot ask Asterisk: {exc}", "is Asterisk installed and running?")
        output = result.stdout + result.stderr
        if result.returncode != 0 or "Unable to connect" in output:
            return Check(name, WARN, f"Asterisk is not running (cannot check its {like} modules)",
                         "systemctl start asterisk")
        # One line per loaded module: name, description, use count, status (Running / Not Running), support level.
        running = {line.split()[0] for line in output.splitlines()
                   if re.search(r"\bRunning\b", line) and not re.search(r"\bNot Running\b", line)}
        missing = [m for m in required if m not in running]
        fix = " && ".join(f'asterisk -rx "module load {m}"' for m in (*missing, *optional) if m not in running)
        what = f"[live] transport = {like}"
        running_for = "" if purpose else f" ({what})"
        purpose = purpose or f"the real-time route (8009) cannot connect its audio ({what})"
        if missing:
            return Check(name, FAIL, f"{', '.join(missing)} not loaded: {purpose}",
                         f"{fix} (and no noload => for them in modules.conf)")
        absent = [m for m in optional if m not in running]
        if absent:
            return Check(name, WARN, f"{', '.join(absent)} not loaded: wideband phones (G.722, Opus) cannot use the "
                         "real-time route ([live] wideband = yes)", f"{fix}, or set [live] wideband = no")
        return Check(name, OK, f"{', '.join((*required, *optional))} running{running_for}")

    def websocket_client(self) -> Check:
        """The ``[live] websocket_client`` section of websocket_client.conf: a websocket_client with our
        uri, and the credentials our media server asks when ``[live] websocket_password`` is set. Read
        from the file (never through a link): Asterisk 22 has no command listing these connections."""
        from ..system.safe_files import lstat, read_plain
        from .install import (
            WEBSOCKET_CLIENT_CONF,
            WEBSOCKET_CLIENT_MODULE,
            asterisk_paths,
            block_text,
            conf_sections,
            live_settings,
            websocket_connections,
        )

        assert self.config is not None
        live = live_settings(self.config)
        path = asterisk_paths().etc / WEBSOCKET_CLIENT_CONF
        connections = websocket_connections(self.config)
        names = ", ".join(f"[{name}]" for name, _ in connections)
        reload = f'asterisk -rx "module reload {WEBSOCKET_CLIENT_MODULE}"'
        install = f"voiceassist install (adds the {names} connection; it reloads {WEBSOCKET_CLIENT_MODULE})"
        entry = lstat(path)
        if entry is None:
            return Check(WEBSOCKET_CLIENT_CONF, FAIL, f"{path} is missing: Asterisk's WebSocket channel has no "
                         f"{names} connection to dial", install)
        if not entry.is_file or entry.info.st_nlink != 1:
            return Check(WEBSOCKET_CLIENT_CONF, FAIL, f"{path} is {entry.kind()}, not a plain file: voiceassist "
                         "install will not write through it", f"replace {path} by a plain file, then {install}")
        try:
            text = (read_plain(path) or b"").decode("utf-8", errors="replace")
        except OSError as exc:
            return Check(WEBSOCKET_CLIENT_CONF, WARN, f"cannot read {path}: {exc.strerror}", "run voiceassist doctor as root")
        sections, ours_sections = conf_sections(text), conf_sections(block_text(text))
        dials = []
        for name, wanted in connections:
            section = sections.get(name)
            ours = name in ours_sections
            # voiceassist's block is rewritten by install; the admin's own section is the admin's to edit.
            fix = install if ours else f"edit [{name}] in {path} and run {reload} (or delete it and run voiceassist install)"
            if section is None:
                worker = "" if len(connections) == 1 else " (for a [fastagi] workers process)"
                return Check(WEBSOCKET_CLIENT_CONF, FAIL, f"no [{name}] section in {path} ([live] websocket_client"
                             f"{worker})", install)
            problems = []
            if section.get("type") != "websocket_client":
                problems.append(f"type is {section.get('type') or 'missing'}, not websocket_client")
            if section.get("uri", "").rstrip("/") != wanted:
                problems.append(f"uri is {section.get('uri') or 'missing'}, but [live] host and websocket_port say {wanted}")
            if live.websocket_password:
                from ..asterisk.websocket_media import USER

                if section.get("username") != USER or section.get("password") != live.websocket_password:
                    problems.append(f"its username/password are not {USER} and [live] websocket_password: our media "
                                    "server would refuse Asterisk")
            if problems:
                return Check(WEBSOCKET_CLIENT_CONF, FAIL, f"[{name}] in {path}: {'; '.join(problems)}", fix)
            dials.append(f"[{name}] dials {wanted}")
            who = "voiceassist's block" if ours else "your own section"
        auth = " with the password" if live.websocket_password else ""
        return Check(WEBSOCKET_CLIENT_CONF, OK, f"{', '.join(dials)}{auth} ({who} in {path})")

    def fastagi(self) -> Check:
        """The listener on the FastAGI port is ours: a FastAGI exchange on the ping route (with
        the configured secret, from this machine), not only an open port."""
        from ..asterisk.access import check_exposure, is_allowed, is_loopback_host, parse_allow
        from ..asterisk.routes import ping

        assert self.config is not None
        section = self.config.section("fastagi")
        host, port, secret = section.get("host"), section.get_int("port"), section.get("secret", "")
        try:
            allowed = parse_allow(section.get("allow"))
            check_exposure(host, allowed, secret)
        except VoiceAssistError as exc:
            return Check("fastagi", FAIL, str(exc), "host = 127.0.0.1, or set [fastagi] secret (and allow)")
        target = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        try:
            answer = ping(target, port, secret, timeout=3)
        except OSError:
            return Check("fastagi", OK, f"not running on {host}:{port} (needed only for the voiceassist-fastagi context)")
        if answer.silent and not is_allowed(answer.local_address, allowed):
            return Check("fastagi", WARN, f"{host}:{port} {answer.detail}: {answer.local_address} is not in "
                                          "[fastagi] allow, so the doctor cannot check it from here",
                         f"add {answer.local_address} to [fastagi] allow")
        if not answer.ours:
            return Check("fastagi", FAIL, f"{host}:{port} {answer.detail}",
                         "check [fastagi] secret and allow, and what listens there: ss -ltnp")
        reach = "loopback only" if is_loopback_host(host) else "reachable from the network"
        protection = "secret and allow list" if secret else "allow list"
        return Check("fastagi", OK, f"{answer.detail} answers on {host}:{port} ({reach}; {protection})")

    def web_console(self) -> Iterator[Check]:
        """The console's bind, its accounts file (root's alone to change), and whether it answers."""
        from .console.accounts import read_accounts
        from .console.server import check_bind
        from .install import WEB_UNIT_PATH

        assert self.config is not None
        web = self.config.web
        users = Path(web.users_file)
        if not (web.enabled or WEB_UNIT_PATH.exists() or users.exists()):
            return  # not set up: nothing to say
        try:
            check_bind(self.config)
        except VoiceAssistError as exc:
            yield Check("web console", FAIL, str(exc), "[web] host = 127.0.0.1 behind a TLS reverse proxy (README)")
            return
        try:
            info = users.lstat()
        except FileNotFoundError:
            yield Check("web accounts", WARN, f"{users} does not exist: nobody can log in",
                        "voiceassist web adduser NAME --role admin")
        else:
            if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
                yield Check("web accounts", FAIL, f"{users} can be changed by users other than root "
                                                  f"({oct(info.st_mode & 0o777)}, uid {info.st_uid}): they could make "
                                                  "themselves an admin", f"chown root: {users}; chmod 0640 {users}")
            elif info.st_mode & 0o004:
                yield Check("web accounts", FAIL, f"{users} is readable by every local user (password hashes)",
                            f"chmod 0640 {users}")
            else:
                accounts = read_accounts(users)
                admins = sum(1 for a in accounts.values() if a.role == "admin")
                status = OK if admins else WARN
                yield Check("web accounts", status, f"{len(accounts)} accounts, {admins} admin",
                            "" if admins else "voiceassist web adduser NAME --role admin")
        if web.transcribe_calls:
            yield self._transcripts()
        target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(web.host, web.host)
        try:
            with socket.create_connection((target, web.port), timeout=3) as connection:
                connection.sendall(f"HEAD /login HTTP/1.0\r\nHost: {target}\r\n\r\n".encode())
                answer = connection.recv(4096).decode("latin-1")
        except OSError:
            yield Check("web console", OK, f"not running on {web.host}:{web.port}",
                        "voiceassist serve starts it ([web] enabled)" if web.enabled else "")
            return
        ours = "Server: voiceassist" in answer
        yield Check("web console", OK if ours else FAIL,
                    f"answers on {web.host}:{web.port}" if ours else f"something else listens on {web.host}:{web.port}",
                    "" if ours else "[web] port: a free one; ss -ltnp shows what listens")

    def _transcripts(self) -> Check:
        """Live transcripts need the manager login and Asterisk's ChanSpy and AudioSocket channel."""
        from ..asterisk.manager import Manager, manager_address

        assert self.config is not None
        try:
            with Manager(manager_address(self.config.web.manager), timeout=3) as manager:
                missing = [module for module in ("app_chanspy", "chan_audiosocket")
                           if manager.action("ModuleCheck", Module=module)[0].get("Response") != "Success"]
        except VoiceAssistError as exc:
            return Check("web transcripts", FAIL, str(exc), "[web] manager: freepbx, or ami://user:secret@host:port")
        if missing:
            return Check("web transcripts", FAIL, f"Asterisk has not loaded {', '.join(missing)}",
                         " ".join(f'asterisk -rx "module load {m}.so";' for m in missing))
        return Check("web transcripts", OK, "the manager answers; app_chanspy and chan_audiosocket are loaded")

    def _user_exists(self) -> bool:
        try:
            pwd.getpwnam(self.user)
            return True
        except KeyError:
            return False


def run_doctor(config_path: str | None, *, online: bool, as_json: bool, out: Callable[[str], None] = print) -> int:
    import json

    results = list(Doctor(Path(config_path) if config_path else None, online=online).checks())
    if as_json:
        out(json.dumps([asdict(c) for c in results], indent=2, ensure_ascii=False))
    else:
        width = max(len(c.name) for c in results)
        for c in results:
            line = f"{c.status:<4}  {c.name:<{width}}  {c.detail}"
            out(line + (f"\n      {'':<{width}}  fix: {c.fix}" if c.status != OK and c.fix else ""))
    return 1 if any(c.status == FAIL for c in results) else 0
