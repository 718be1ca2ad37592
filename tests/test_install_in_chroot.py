"""`voiceassist install`, `uninstall` and `doctor`, run for real inside the Asterisk chroot (its own
Python venv, its running Asterisk), then calls to 8008 through what was installed.

As on FreePBX, Asterisk runs as the ``asterisk`` user for this module, so the installed AGI wrapper
runs as that user, and the installed FastAGI unit's command is run as the unit's ``User=``.

The tests run in file order, each building on the one before (install, calls, broken setup,
uninstall). The module runs before the other rig tests (file order): it needs port 4573 for the
installed FastAGI variant, and it restores the rig (Asterisk as root, the rig's own files) when done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time

import pytest

from harness.console import HTTPClient, wait_for_port
from harness.emulators.openai_api import tone_for
from harness.helpers import rig_conf
from harness.rig.asterisk import PIP_ENV, REPO, SHARED
from harness.rig.calls import RIG_DIALPLAN, make_question, place_call, tone_seconds

ADMIN_LINES = """; the admin's own dialplan, which install and uninstall must leave alone
[from-internal-custom]
exten => 4321,1,Answer()
 same => n,Playback(hello-world)
"""
VENV_BIN = "/opt/voiceassist/venv/bin/voiceassist"
CONF = "/etc/voiceassist/voiceassist.conf"
MANIFEST = "/var/lib/voiceassist/install-manifest.json"
WRAPPER = "/usr/share/asterisk/agi-bin/voiceassist"
PROMPTS = "/usr/share/asterisk/sounds/custom/voiceassist"
INSTALLED_DB = "/var/lib/asterisk/voiceassist/voiceassist.db"  # the template's default (astvarlibdir)
UNIT = "/etc/systemd/system/voiceassist.service"
WEB_UNIT = "/etc/systemd/system/voiceassist-web.service"
ASTERISK_UID = 101  # the chroot's asterisk user
QUESTION = "What are your opening hours?"


def provider_sections(conf: str) -> str:
    """The rig config's provider sections only (an admin adds keys; the paths stay as installed)."""
    keep = []
    for block in re.split(r"(?m)^(?=\[)", conf):
        name = block[1:block.find("]")] if block.startswith("[") else ""
        if name and name not in ("general", "database", "logging"):
            keep.append(block)
    return "".join(keep)


@pytest.fixture(scope="module")
def chroot(rig, emulators):
    """The rig with voiceassist removed (as on a PBX before install) and Asterisk running as the
    asterisk user; restored afterwards."""
    etc = rig.host_path("/etc/asterisk")
    (etc / "extensions_custom.conf").write_text(ADMIN_LINES)
    rig.host_path(CONF).unlink(missing_ok=True)
    rig.host_path("/etc/asterisk/voiceassist.conf").unlink(missing_ok=True)  # where 0.x kept it
    rig.host_path(MANIFEST).unlink(missing_ok=True)
    rig.host_path(WRAPPER).unlink(missing_ok=True)
    for prompt in rig.host_path(PROMPTS).glob("*.ulaw"):
        prompt.unlink()
    rig.restart(user="asterisk")
    yield rig
    run(rig, "uninstall", "--purge", check=False)
    rig.reinstall_editable()
    rig.configure(rig_conf(emulators), RIG_DIALPLAN)
    rig.restart()


def run(rig, *args: str, user: str = "", check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*as_user(rig, user), VENV_BIN, *args], capture_output=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"voiceassist {' '.join(args)} exited {result.returncode}:\n{text(result)}")
    return result


def as_user(rig, user: str = "") -> list[str]:
    """The command prefix running a program inside the chroot, as root or as ``user`` (exec'd
    directly, no intermediate process that could keep pipes open)."""
    return ["chroot", *([f"--userspec={user}:{user}"] if user else []), str(rig.chroot)]


def text(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


def snapshot(rig) -> dict[str, tuple[int, int]]:
    paths = ["/etc/asterisk/extensions_custom.conf", CONF, WRAPPER, f"{PROMPTS}/beep.ulaw"]
    return {p: (rig.host_path(p).stat().st_mtime_ns, rig.host_path(p).stat().st_size) for p in paths}


@pytest.fixture
def question(emulators):
    emulators["speech"].transcripts = {2200: QUESTION}
    return make_question("hours", QUESTION, 2200)


def installed_turns(rig, caller_number: str, timeout: float = 20) -> tuple[dict, list[dict]]:
    """The ended call and its turns in the installed database (written by the asterisk user)."""
    deadline = time.monotonic() + timeout
    while True:
        path = rig.host_path(INSTALLED_DB)
        if path.exists():
            with sqlite3.connect(path) as db:
                db.row_factory = sqlite3.Row
                call = db.execute("SELECT * FROM voiceassist_calls WHERE caller_number = ?", (caller_number,)).fetchone()
                if call is not None and call["ended_at"]:
                    turns = [dict(r) for r in db.execute(
                        "SELECT * FROM voiceassist_turns WHERE call_id = ? ORDER BY turn_number", (call["id"],))]
                    return dict(call), turns
        if time.monotonic() > deadline:
            raise AssertionError(f"no ended call from {caller_number} in {INSTALLED_DB}")
        time.sleep(0.2)


def assert_answered_as_asterisk(rig, call, caller_number: str) -> None:
    call.wait()
    row, turns = installed_turns(rig, caller_number)
    assert turns[0]["status"] == "ok", turns[0]["error"]
    reply = f"Answer 1: you asked, {QUESTION}"
    assert turns[0]["transcript"] == QUESTION and turns[0]["reply"] == reply
    answer = rig.host_path(turns[0]["answer_path"])
    assert answer.stat().st_uid == ASTERISK_UID, "the answer was not written by the asterisk user"
    assert rig.host_path(INSTALLED_DB).stat().st_uid == ASTERISK_UID
    assert tone_seconds(call.heard_path, tone_for(reply)) > 0.5, "the caller did not hear the answer"


def readme_install_block() -> list[str]:
    """The lines of the README's FreePBX install block, in order."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Install on FreePBX"):]
    block = section[section.index("```sh\n") + 6:]
    return [line.strip() for line in block[:block.index("```")].splitlines() if line.strip()]


def copy_checkout(rig) -> str:
    """The admin's copy of this checkout (its files as they are now, not ignored ones), inside the chroot."""
    target = rig.host_path("/root/voiceassist")
    shutil.rmtree(target, ignore_errors=True)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return "/root/voiceassist"


def test_readme_install_steps_work_as_written(chroot, emulators):
    """Every line of the README's install block, run as root in a copy of the checkout, with the
    checks a new admin would make between them."""
    rig = chroot
    checkout = copy_checkout(rig)
    lines = readme_install_block()
    assert any(line.endswith("voiceassist install") or " install " in line for line in lines)
    outputs: dict[str, str] = {}
    for line in lines:
        if line.startswith("#"):
            if f"edit {CONF}" in line:
                # The admin adds provider keys (here: the emulators) to the installed config.
                with open(rig.host_path(CONF), "a") as handle:
                    handle.write("\n" + provider_sections(rig_conf(emulators)))
            continue
        command = line.split("  #")[0].strip()
        result = subprocess.run([*as_user(rig), *PIP_ENV, "DEBIAN_FRONTEND=noninteractive", "bash", "-c",
                                 f"cd {checkout} && {command}"], capture_output=True, timeout=600)
        outputs[command.replace(VENV_BIN + " ", "voiceassist ")] = text(result)
        if " doctor" not in command:
            assert result.returncode == 0, f"{command}:\n{text(result)}"
        if command.endswith("install --dry-run"):
            # --dry-run lists every change and makes none.
            assert f"would write AGI wrapper {WRAPPER}" in text(result)
            assert "would add the [voiceassist] contexts in /etc/asterisk/extensions_custom.conf" in text(result)
            assert not rig.host_path(CONF).exists() and not rig.host_path(WRAPPER).exists()
            assert "voiceassist-flow" not in rig.cli("dialplan show 8008@voiceassist")
        elif command.endswith("install"):
            # Paths follow the rig's asterisk.conf (astagidir, astdatadir, astspooldir).
            out = text(result)
            assert "dialplan reload" in out and "Custom Destinations" in out and "voiceassist,8008,1" in out
            conf = rig.host_path(CONF)
            # Only root may change it (it names programs root runs); asterisk reads it through its group.
            assert oct(conf.stat().st_mode & 0o777) == "0o640" and conf.stat().st_uid == 0
            assert conf.stat().st_gid == ASTERISK_UID and conf.parent.stat().st_mode & 0o777 == 0o750
            assert f"answer_dir = {SHARED}/spool/voiceassist" in conf.read_text()
            assert f"url = sqlite:///{INSTALLED_DB}" in conf.read_text()
            wrapper = rig.host_path(WRAPPER).read_text()
            assert f'exec "{VENV_BIN}" agi "$@"' in wrapper and "api_key" not in wrapper
            shipped = sorted(p.name for p in (REPO / "sounds").glob("*.ulaw"))
            assert sorted(p.name for p in rig.host_path(PROMPTS).glob("*.ulaw")) == shipped and len(shipped) >= 7
            custom = rig.host_path("/etc/asterisk/extensions_custom.conf").read_text()
            assert custom.startswith(ADMIN_LINES) and "; BEGIN voiceassist" in custom and "; END voiceassist" in custom
            assert "voiceassist-flow" in rig.cli("dialplan show 8008@voiceassist")
            # "running it again changes nothing"
            before = snapshot(rig)
            assert "nothing to change" in text(run(rig, "install"))
            assert snapshot(rig) == before
    assert set(outputs) >= {"voiceassist install --dry-run", "voiceassist install", "voiceassist db upgrade",
                            "voiceassist doctor"}, list(outputs)
    # db upgrade ran as root; the database it created belongs to the asterisk user who makes the calls.
    assert "schema upgraded from empty" in outputs["voiceassist db upgrade"]
    assert rig.host_path(INSTALLED_DB).stat().st_uid == ASTERISK_UID
    # Doctor on the good setup: no FAIL (Asterisk runs, dialplan loaded, files usable by asterisk).
    assert "FAIL" not in outputs["voiceassist doctor"], outputs["voiceassist doctor"]
    checks = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json").stdout)}
    for name in ("dialplan", "agi wrapper", "config permissions", "sounds", "database", "audiosocket modules"):
        assert checks[name]["status"] == "OK", checks[name]
    # Only root installs: a clear one-line refusal for anyone else.
    refused = run(rig, "install", user="asterisk", check=False)
    assert refused.returncode == 1 and "run `voiceassist install` as root" in text(refused)
    assert "Traceback" not in text(refused)


def test_call_through_the_installed_wrapper_runs_as_the_asterisk_user(chroot, question):
    rig = chroot
    assert rig.user == "asterisk"
    call = place_call(rig, "7601", [question], context="voiceassist")
    assert_answered_as_asterisk(rig, call, "7601")
    assert "voiceassist" in rig.host_path("/var/log/asterisk/voiceassist.log").read_text()


def test_call_through_the_installed_fastagi_unit(chroot, question):
    rig = chroot
    out = text(run(rig, "install", "--fastagi"))
    assert f"write systemd unit {UNIT}" in out and "systemd is not running here" in out
    unit = rig.host_path(UNIT).read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["User"] == "asterisk" and settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict" and f"-{SHARED}/spool/voiceassist" in settings["ReadWritePaths"]
    # What systemd would run: ExecStart as User=, with the unit's Environment=.
    server = subprocess.Popen([*as_user(rig, settings["User"]), "env", settings["Environment"],
                               *settings["ExecStart"].split()],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline and not any("listening" in line for line in seen):
            line = server.stdout.readline()
            if not line:
                break
            seen.append(line)
        assert any("listening on 127.0.0.1:4573" in line for line in seen), seen
        doctor = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json", check=False).stdout)}
        assert doctor["fastagi"]["status"] == "OK" and "loopback" in doctor["fastagi"]["detail"]
        call = place_call(rig, "7602", [question], context="voiceassist-fastagi")
        assert_answered_as_asterisk(rig, call, "7602")
    finally:
        server.terminate()
        remaining, _ = server.communicate(timeout=60)
    assert server.returncode == 0, remaining
    assert "Traceback" not in remaining


def test_the_installed_web_console_sees_a_process_agi_call(chroot, question):
    """install --web, then the unit's command as its User=: a process-AGI call (Asterisk runs as
    asterisk) tells the console through the live feed, and its page and audio are there."""
    rig = chroot
    out = text(run(rig, "install", "--web"))
    assert f"write systemd unit {WEB_UNIT}" in out and "systemd is not running here" in out
    settings = dict(line.split("=", 1) for line in rig.host_path(WEB_UNIT).read_text().splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["User"] == "asterisk" and settings["ProtectSystem"] == "strict"
    assert settings["RuntimeDirectory"] == "voiceassist-web" and settings["ExecStart"].endswith(" web")
    runtime = rig.host_path("/run/voiceassist-web")  # what systemd makes for RuntimeDirectory=
    runtime.mkdir(mode=0o750, exist_ok=True)
    os.chown(runtime, ASTERISK_UID, ASTERISK_UID)
    added = subprocess.run([*as_user(rig), VENV_BIN, "web", "adduser", "admin", "--role", "admin", "--password-stdin"],
                           input=b"a long admin password\n", capture_output=True, timeout=60)
    assert added.returncode == 0, text(added)
    users = rig.host_path("/etc/voiceassist/web-users")
    assert users.stat().st_uid == 0 and users.stat().st_gid == ASTERISK_UID and users.stat().st_mode & 0o777 == 0o640
    console = subprocess.Popen([*as_user(rig, settings["User"]), "env", settings["Environment"],
                                *settings["ExecStart"].split()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(4580)
        socket_info = rig.host_path("/run/voiceassist-web/live.sock").stat()
        assert socket_info.st_uid == ASTERISK_UID and socket_info.st_mode & 0o777 == 0o660
        client = HTTPClient("http://127.0.0.1:4580")
        assert client.login("admin", "a long admin password") == 302
        call = place_call(rig, "7603", [question], context="voiceassist")
        assert_answered_as_asterisk(rig, call, "7603")
        row, _ = installed_turns(rig, "7603")
        deadline = time.monotonic() + 10
        while True:
            _, _, body = client.request("/metrics")
            counted = [line for line in body.decode().splitlines()
                       if line.startswith('voiceassist_turns_total{status="ok"}')]
            if counted and float(counted[0].split()[-1]) >= 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counted and float(counted[0].split()[-1]) >= 1, body.decode()
        status, _, page = client.request(f"/calls/{row['uniqueid']}")
        assert status == 200 and QUESTION.encode() in page
        status, _, wav = client.request(f"/audio/{row['uniqueid']}/1/answer")
        assert status == 200 and wav[:4] == b"RIFF"
    finally:
        console.terminate()
        remaining, _ = console.communicate(timeout=30)
    assert b"Traceback" not in remaining, remaining.decode(errors="replace")


def test_doctor_names_what_is_broken_and_how_to_fix_it(chroot):
    rig = chroot
    conf, wrapper = rig.host_path(CONF), rig.host_path(WRAPPER)
    conf.chmod(0o644)
    wrapper.unlink()
    try:
        result = run(rig, "doctor", check=False)
        report = text(result)
        assert result.returncode == 1
        assert re.search(r"FAIL\s+config permissions\s+.*0644: every local user can read its API keys", report), report
        assert re.search(rf"FAIL\s+agi wrapper\s+{WRAPPER} missing\n\s+fix: voiceassist install", report), report
        assert "Traceback" not in report
    finally:
        conf.chmod(0o640)
    # install puts the wrapper back (and only that).
    out = text(run(rig, "install", "--fastagi"))
    assert f"write AGI wrapper {WRAPPER}" in out and "copy prompt" not in out
    assert run(rig, "doctor", check=False).returncode == 0


def test_uninstall_removes_what_install_added_and_keeps_the_admins_lines(chroot):
    rig = chroot
    out = text(run(rig, "uninstall"))
    assert f"kept {CONF}" in out
    assert rig.host_path("/etc/asterisk/extensions_custom.conf").read_text() == ADMIN_LINES
    assert not list(rig.host_path(PROMPTS).glob("*.ulaw"))
    assert not rig.host_path(WRAPPER).exists() and not rig.host_path(UNIT).exists()
    assert not rig.host_path(WEB_UNIT).exists()
    assert rig.host_path(CONF).exists()
    assert rig.host_path(INSTALLED_DB).exists(), "the calls stay (only --purge removes data)"
    assert "voiceassist-flow" not in rig.cli("dialplan show 8008@voiceassist")
    assert "4321" in rig.cli("dialplan show from-internal-custom")


# -- [live] transport = websocket: the connection Asterisk's WebSocket channel dials -----------------
WEBSOCKET_CONF = "/etc/asterisk/websocket_client.conf"
WEBSOCKET_PASSWORD = "Sesame-4f9c;e21b"  # a ';' too: Asterisk would read the rest of the line as a comment
ADMIN_WEBSOCKET = """; the admin's own connections, which install and uninstall must leave alone
[ari-events]
type = websocket_client
uri = ws://127.0.0.1:9/events
connection_type = per_call_config
"""


def websocket_config(conf: str, port: int, password: str = WEBSOCKET_PASSWORD) -> str:
    """The installed config with ``[live] transport = websocket`` on ``port`` and its password."""
    live = re.sub(r"(?m)^transport = audiosocket", "transport = websocket", conf)
    live = re.sub(r"(?m)^websocket_port = \d+", f"websocket_port = {port}", live)
    live = re.sub(r"(?m)^;websocket_password =.*$", f"websocket_password = {password}", live)
    assert live.count("transport = websocket") == 1 and f"websocket_password = {password}" in live, live
    return live


def upgrade_request(rig, port: int, timeout: float = 10, connection: str = "voiceassist") -> bytes:
    """What Asterisk sends when its WebSocket channel dials the ``[connection]`` section (a call
    originated from the CLI to ``WebSocket/<connection>``): the HTTP upgrade request that reaches a
    listener on ``port``, or b"" when none comes."""
    import socket

    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(4)
        listener.settimeout(timeout)
        rig.cli(f"channel originate WebSocket/{connection}/c(slin) application Wait 2")
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            return b""
        with connection:
            connection.settimeout(timeout)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                request += chunk
        return request  # closed unanswered: Asterisk gives up after its reconnect attempts


def test_websocket_transport_install_writes_the_connection_asterisk_dials_and_uninstall_only_that(chroot):
    import base64

    from harness.rig.asterisk import free_port

    rig = chroot
    conf_path, websocket = rig.host_path(CONF), rig.host_path(WEBSOCKET_CONF)
    if websocket.is_symlink():
        websocket.unlink()
    websocket.write_text(rig.host_path("/usr/share/asterisk/conf/samples/websocket_client.conf.sample").read_text()
                         + "\n" + ADMIN_WEBSOCKET)
    admin_text = websocket.read_text()
    os.chown(websocket, ASTERISK_UID, ASTERISK_UID)  # as `fwconsole chown` leaves /etc/asterisk: asterisk:asterisk 0640
    websocket.chmod(0o640)
    run(rig, "install")  # the config template first (also when this test runs alone)
    assert "would leave" in text(run(rig, "install", "--dry-run")), "audiosocket: websocket_client.conf untouched"
    original = conf_path.read_text()
    port = free_port()
    conf_path.write_text(websocket_config(original, port))
    uri = f"ws://127.0.0.1:{port}/media"
    try:
        planned = text(run(rig, "install", "--dry-run"))
        assert (f"would add the [voiceassist] connection to {uri} with the password of [live] websocket_password "
                f"in {WEBSOCKET_CONF}") in planned, planned
        assert 'would run `asterisk -rx "module reload res_websocket_client.so"`' in planned, planned
        assert WEBSOCKET_PASSWORD not in planned and "Sesame" not in planned
        assert websocket.read_text() == admin_text, "--dry-run changes nothing"

        out = text(run(rig, "install"))
        assert f"add the [voiceassist] connection to {uri}" in out and "module reload res_websocket_client.so" in out
        assert "Sesame" not in out, out
        written = websocket.read_text()
        assert written.startswith(admin_text) and written.count("; BEGIN voiceassist") == 1
        block = written[written.index("; BEGIN voiceassist"):]
        assert "\n[voiceassist]\ntype = websocket_client\n" in block and f"\nuri = {uri}\n" in block
        assert "\nprotocols = media\n" in block and "\nusername = voiceassist\n" in block
        assert "\npassword = Sesame-4f9c\\;e21b\n" in block, block
        info = websocket.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (ASTERISK_UID, ASTERISK_UID, 0o640)
        manifest = json.loads(rig.host_path(MANIFEST).read_text())
        assert {"path": WEBSOCKET_CONF, "kind": "block", "sha256": ""} in manifest["records"]
        assert "Sesame" not in rig.host_path(MANIFEST).read_text()
        assert "nothing to change" in text(run(rig, "install")), "a second install changes nothing"

        # Asterisk (running as asterisk) loaded it: its WebSocket channel dials our uri with our password.
        request = upgrade_request(rig, port).decode(errors="replace")
        assert request.startswith("GET /media HTTP/1.1\r\n"), request
        credentials = base64.b64encode(b"voiceassist:Sesame-4f9c;e21b").decode()
        assert f"Authorization: Basic {credentials}\r\n" in request, request
        assert "Sec-WebSocket-Protocol: media\r\n" in request, request

        checks = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json", check=False).stdout)}
        for name in ("websocket modules", "websocket_client.conf"):
            assert checks[name]["status"] == "OK", checks[name]
        assert "chan_websocket.so" in checks["websocket modules"]["detail"]
        assert uri in checks["websocket_client.conf"]["detail"]
        report = text(run(rig, "doctor", check=False))
        assert re.search(r"OK\s+websocket_client.conf\s+\[voiceassist\] dials", report) and "Sesame" not in report
        # The channel driver unloaded: doctor says so, and its fix line loads it again.
        rig.cli("module unload chan_websocket.so")
        try:
            modules = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json", check=False).stdout)}
            modules = modules["websocket modules"]
            assert modules["status"] == "FAIL" and "chan_websocket.so not loaded" in modules["detail"], modules
            command = modules["fix"].split(" (and ")[0]
            assert command == 'asterisk -rx "module load chan_websocket.so"', command
            subprocess.run([*as_user(rig), "sh", "-c", command], check=True, capture_output=True)
        finally:
            if "chan_websocket.so" not in rig.cli("module show like chan_websocket"):
                rig.cli("module load chan_websocket.so")
        checks = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json", check=False).stdout)}
        assert checks["websocket modules"]["status"] == "OK", checks["websocket modules"]

        # Another password in the config: doctor names the mismatch (never either password), install fixes it.
        conf_path.write_text(websocket_config(original, port, "Other-77"))
        check = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json", check=False).stdout)}
        mismatch = check["websocket_client.conf"]
        assert mismatch["status"] == "FAIL" and "password" in mismatch["detail"], mismatch
        assert "Sesame" not in json.dumps(mismatch) and "Other-77" not in json.dumps(mismatch)
        assert mismatch["fix"].startswith("voiceassist install")
        out = text(run(rig, "install"))
        assert "update the [voiceassist] connection" in out and "Other-77" not in out, out
        conf_path.write_text(websocket_config(original, port))
        run(rig, "install")

        out = text(run(rig, "uninstall"))
        assert f"remove the voiceassist connection from {WEBSOCKET_CONF}" in out, out
        assert "module reload res_websocket_client.so" in out and "Sesame" not in out
        assert websocket.read_text() == admin_text, "uninstall removes our block only"
        info = websocket.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (ASTERISK_UID, ASTERISK_UID, 0o640)
        assert not rig.host_path(MANIFEST).exists() or WEBSOCKET_CONF not in rig.host_path(MANIFEST).read_text()
        assert upgrade_request(rig, port, timeout=3) == b"", "Asterisk still dials the removed connection"
        for log in ("/var/log/asterisk/full", "/var/log/asterisk/voiceassist.log"):
            path = rig.host_path(log)
            assert not path.exists() or "Sesame" not in path.read_text(errors="replace"), log
    finally:
        conf_path.write_text(original)


def test_websocket_install_writes_one_connection_per_worker_and_each_reaches_its_worker(chroot):
    """`serve` with [fastagi] workers = 2: worker 1's media server listens on websocket_port + 1
    and its calls dial [voiceassist-1]; install writes both connections and Asterisk dials each to
    its own port; doctor checks both."""
    from harness.rig.asterisk import free_port

    rig = chroot
    conf_path, websocket = rig.host_path(CONF), rig.host_path(WEBSOCKET_CONF)
    run(rig, "install")  # the config template first (also when this test runs alone)
    original = conf_path.read_text()
    port = free_port()
    while True:  # two ports in a row, as the workers use them
        try:
            import socket

            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 1))
            break
        except OSError:
            port = free_port()
    live = websocket_config(original, port)
    assert live.count("\nworkers = 1 ") == 1, "the template's [fastagi] workers line"
    conf_path.write_text(live.replace("\nworkers = 1 ", "\nworkers = 2 "))
    try:
        planned = text(run(rig, "install", "--dry-run"))
        assert (f"would add the [voiceassist], [voiceassist-1] connections to ws://127.0.0.1:{port}/media, "
                f"ws://127.0.0.1:{port + 1}/media (one per [fastagi] workers process)") in planned, planned
        run(rig, "install")
        block = websocket.read_text()
        block = block[block.index("; BEGIN voiceassist"):]
        assert f"[voiceassist]\ntype = websocket_client\nuri = ws://127.0.0.1:{port}/media\n" in block, block
        assert f"[voiceassist-1]\ntype = websocket_client\nuri = ws://127.0.0.1:{port + 1}/media\n" in block, block
        assert block.count("\nusername = voiceassist\n") == 2
        # Asterisk dials each connection to its own worker's port.
        assert upgrade_request(rig, port).startswith(b"GET /media HTTP/1.1\r\n")
        assert upgrade_request(rig, port + 1, connection="voiceassist-1").startswith(b"GET /media HTTP/1.1\r\n")
        check = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json", check=False).stdout)}["websocket_client.conf"]
        assert check["status"] == "OK", check
        assert f"[voiceassist-1] dials ws://127.0.0.1:{port + 1}/media" in check["detail"], check
        # An admin who removed worker 1's connection by hand is told which one is missing.
        websocket.write_text(re.sub(r"\[voiceassist-1\]\ntype = websocket_client", "[renamed]\ntype = websocket_client",
                                    websocket.read_text()))
        check = {c["name"]: c for c in json.loads(run(rig, "doctor", "--json", check=False).stdout)}["websocket_client.conf"]
        assert check["status"] == "FAIL" and "no [voiceassist-1] section" in check["detail"], check
    finally:
        conf_path.write_text(original)
        run(rig, "install")  # audiosocket again: the block goes
    assert "; BEGIN voiceassist" not in websocket.read_text()
