"""The asterisk user attacks root's commands, in the Asterisk chroot (``fs.protected_symlinks = 0``
on this host, so planted links really are followed by anything that follows links).

The asterisk user is who a compromised dialplan, FreePBX's PHP or any Asterisk module runs as. It
owns Asterisk's directories (as on FreePBX: agi-bin, sounds, spool, /var/lib/asterisk, the log
directory and /etc/asterisk), so it plants links and forged files there; then root runs
``install``, a re-install, ``db flush`` and ``uninstall --purge``. A decoy tree only root may
write (/root/decoy) must come out byte-, mode- and owner-identical, and every command either
refuses with one clear line or works on voiceassist's own files only.

Then: config and knowledge files the asterisk user could write are refused by every root command
(and still serve the asterisk user's own calls); extensions_custom.conf keeps FreePBX's owner and
mode; Debian's stock extensions.conf is made to load our contexts by doctor's fix line; the
installed FastAGI address follows ``[fastagi] port``; the daily prune and the logrotate snippet.

The tests run in file order, each building on the one before.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness.helpers import rig_conf
from harness.rig.asterisk import SHARED
from harness.rig.calls import RIG_DIALPLAN, place_call
from tests.test_install_in_chroot import (  # noqa: F401  (question: a fixture used here)
    ADMIN_LINES,
    ASTERISK_UID,
    CONF,
    INSTALLED_DB,
    PROMPTS,
    VENV_BIN,
    WRAPPER,
    as_user,
    assert_answered_as_asterisk,
    provider_sections,
    question,
    text,
)

MANIFEST = "/var/lib/voiceassist/install-manifest.json"
LEGACY_MANIFEST = "/var/lib/asterisk/voiceassist/install-manifest.json"
DECOY = "/root/decoy"
AGI_BIN = "/usr/share/asterisk/agi-bin"
SOUNDS_CUSTOM = "/usr/local/share/asterisk/sounds"   # Debian: sounds/custom links here
ANSWERS = f"{SHARED}/spool/voiceassist"
SPOOL = f"{SHARED}/spool/voiceassist-spool"
LOG = "/var/log/asterisk/voiceassist.log"
CRON = "/etc/cron.d/voiceassist"
LOGROTATE = "/etc/logrotate.d/voiceassist"
ROOT_COMMANDS = [("db", "upgrade"), ("db", "flush"), ("db", "prune", "--days", "1"), ("calls",),
                 ("ask", "/tmp/question.wav"), ("serve",), ("install", "--no-reload")]


def as_asterisk(rig, script: str, check: bool = True) -> subprocess.CompletedProcess:
    """A shell script run inside the chroot as the asterisk user: the attacker."""
    result = subprocess.run([*as_user(rig, "asterisk"), "sh", "-c", script], capture_output=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"as asterisk: {script}\n{text(result)}")
    return result


def voiceassist(rig, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*as_user(rig), VENV_BIN, *args], capture_output=True, timeout=120)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every object below ``root`` (and itself): type and mode, owner, group, content or link target."""
    found = {}
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in [".", *dirs, *files]:
            path = Path(directory) / name if name != "." else Path(directory)
            info = os.lstat(path)
            content = (path.read_bytes() if stat.S_ISREG(info.st_mode) else
                       os.readlink(path) if stat.S_ISLNK(info.st_mode) else None)
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, content)
    return found


def one_clear_line(result: subprocess.CompletedProcess) -> str:
    out = text(result)
    assert "Traceback" not in out, out
    lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
    assert len(lines) == 1, out
    return lines[0]


@pytest.fixture(scope="module")
def pbx(rig, emulators):
    """The rig as a FreePBX-like PBX before install: voiceassist absent, Asterisk running as the
    asterisk user, who owns Asterisk's directories; a decoy tree only root may write. Restored after."""
    etc = rig.host_path("/etc/asterisk")
    (etc / "extensions_custom.conf").write_text(ADMIN_LINES)
    for path in (CONF, MANIFEST, WRAPPER, CRON, LOGROTATE, "/etc/systemd/system/voiceassist.service"):
        rig.host_path(path).unlink(missing_ok=True)  # also what an interrupted earlier run left
    for path in (ANSWERS, SPOOL, "/var/lib/asterisk/voiceassist", f"{SOUNDS_CUSTOM}/voiceassist"):
        shutil.rmtree(rig.host_path(path), ignore_errors=True)
    for directory in (AGI_BIN, SOUNDS_CUSTOM, "/etc/asterisk", "/var/log/asterisk", f"{SHARED}/spool"):
        rig.host_path(directory).mkdir(parents=True, exist_ok=True)
        os.chown(rig.host_path(directory), ASTERISK_UID, ASTERISK_UID)
    rig.host_path(LOG).unlink(missing_ok=True)
    decoy = rig.host_path(DECOY)
    shutil.rmtree(decoy, ignore_errors=True)
    (decoy / "dir" / "inner").mkdir(parents=True)
    (decoy / "secret").write_bytes(b"root's secret\n")
    (decoy / "secret").chmod(0o600)
    (decoy / "dir" / "file").write_bytes(b"root's file\n")
    (decoy / "dir" / "inner" / "deep").write_bytes(b"deep\n")
    (decoy / "dir").chmod(0o700)
    rig.restart(user="asterisk")
    yield rig
    voiceassist(rig, "uninstall", "--purge", "--no-reload")
    for leftover in (f"{AGI_BIN}/.voiceassist.voiceassist-tmp", LOG, f"{SOUNDS_CUSTOM}/voiceassist"):
        path = rig.host_path(leftover)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    for directory in (AGI_BIN, SOUNDS_CUSTOM):
        os.chown(rig.host_path(directory), 0, 0)
    shutil.rmtree(decoy, ignore_errors=True)
    rig.configure(rig_conf(emulators), RIG_DIALPLAN)
    rig.restart()


# -- 1. links and forged files planted by the asterisk user -------------------------------------------
def test_planted_links_and_forged_files_never_reach_roots_files(pbx):
    rig = pbx
    decoy = rig.host_path(DECOY)
    before = snapshot(decoy)
    # Where the new manifest lives the asterisk user cannot even create a file.
    assert as_asterisk(rig, "mkdir -p /var/lib/voiceassist && touch /var/lib/voiceassist/x", check=False).returncode != 0
    # Before the first install: the wrapper, its old predictable temp name, a prompt in a sounds
    # directory the user made, the data directories, the spool's lock and rejected/, the log, and
    # a forged manifest where older versions kept it.
    as_asterisk(rig, f"""
        ln -s {DECOY}/secret {AGI_BIN}/voiceassist
        ln -s {DECOY}/secret {AGI_BIN}/.voiceassist.voiceassist-tmp
        mkdir -p {SOUNDS_CUSTOM}/voiceassist && ln -s {DECOY}/secret {SOUNDS_CUSTOM}/voiceassist/beep.ulaw
        mkfifo {SOUNDS_CUSTOM}/voiceassist/greeting.ulaw
        mkdir -p {ANSWERS} && ln -s {DECOY}/secret {ANSWERS}/answer-1.ulaw && ln -s {DECOY}/dir {ANSWERS}/call
        mkdir -p {SPOOL} && ln -s {DECOY}/secret {SPOOL}/.replay.lock && ln -s {DECOY}/dir {SPOOL}/rejected
        echo 'not json' > {SPOOL}/00000000000000000001-1-000000-forged-turn1.json
        ln -s {DECOY}/secret {LOG}
        mkdir -p /var/lib/asterisk/voiceassist
        echo '{{"created": ["{DECOY}/secret", "{DECOY}/dir", "{DECOY}"]}}' > {LEGACY_MANIFEST}
    """)
    first = voiceassist(rig, "install", "--no-reload")
    assert first.returncode == 0, text(first)
    assert "Traceback" not in text(first) and f"ignoring {LEGACY_MANIFEST}" in text(first)
    assert snapshot(decoy) == before
    wrapper = rig.host_path(WRAPPER)
    assert not wrapper.is_symlink() and f'exec "{VENV_BIN}" agi' in wrapper.read_text()
    assert (wrapper.stat().st_uid, wrapper.stat().st_mode & 0o777) == (0, 0o755)
    for name in ("beep.ulaw", "greeting.ulaw"):
        prompt = rig.host_path(f"{PROMPTS}/{name}")
        assert stat.S_ISREG(prompt.lstat().st_mode) and prompt.stat().st_uid == 0, name
    assert rig.host_path(LOG).is_symlink(), "an existing log entry is left alone, never opened by root"
    manifest = rig.host_path(MANIFEST)
    assert manifest.stat().st_uid == 0 and manifest.parent.stat().st_mode & 0o777 == 0o700

    # Re-install after the asterisk user swapped our wrapper and a prompt for links.
    as_asterisk(rig, f"""
        rm {AGI_BIN}/voiceassist && ln -s {DECOY}/secret {AGI_BIN}/voiceassist
        rm {PROMPTS}/beep.ulaw && ln -s {DECOY}/dir/file {PROMPTS}/beep.ulaw
    """)
    again = voiceassist(rig, "install", "--no-reload")
    assert again.returncode == 0 and "Traceback" not in text(again), text(again)
    assert f"write AGI wrapper {WRAPPER}" in text(again) and "copy prompt beep.ulaw" in text(again)
    assert not rig.host_path(WRAPPER).is_symlink() and not rig.host_path(f"{PROMPTS}/beep.ulaw").is_symlink()
    assert snapshot(decoy) == before

    # The whole sounds directory swapped for a link to root's directory: refused, in one line.
    as_asterisk(rig, f"mv {PROMPTS} {PROMPTS}.mine && ln -s {DECOY}/dir {PROMPTS}")
    refused = voiceassist(rig, "install", "--no-reload")
    line = one_clear_line(refused)
    assert refused.returncode == 1 and "refused" in line and "symbolic link" in line, line
    assert f"{SOUNDS_CUSTOM}/voiceassist" in line, line  # sounds/custom: Debian's own link, followed
    assert snapshot(decoy) == before
    as_asterisk(rig, f"rm {PROMPTS} && mv {PROMPTS}.mine {PROMPTS}")

    # db flush as root works as asterisk: the lock file is a link (refused), then rejected/ is.
    flush = voiceassist(rig, "db", "flush")
    line = one_clear_line(flush)
    assert flush.returncode == 1 and ".replay.lock" in line and "symbolic links" in line, line
    as_asterisk(rig, f"rm {SPOOL}/.replay.lock")
    flush = voiceassist(rig, "db", "flush")
    line = one_clear_line(flush)
    assert flush.returncode == 1 and f"{SPOOL}/rejected is not a plain directory" in line, line
    assert rig.host_path(f"{SPOOL}/.replay.lock").stat().st_uid == ASTERISK_UID, "the lock is made by asterisk"
    assert snapshot(decoy) == before

    # uninstall --purge: the forged old manifest is ignored; a manifest naming root's files (as
    # if forged where only root writes) is obeyed only for paths install manages.
    records = json.loads(rig.host_path(MANIFEST).read_text())
    secret = hashlib.sha256((decoy / "secret").read_bytes()).hexdigest()
    records["records"] += [{"path": f"{DECOY}/secret", "kind": "file", "sha256": secret},
                           {"path": f"{DECOY}/dir", "kind": "data", "sha256": ""},
                           {"path": "/root", "kind": "directory", "sha256": ""}]
    rig.host_path(MANIFEST).write_text(json.dumps(records))
    as_asterisk(rig, f"rm {AGI_BIN}/voiceassist && ln -s {DECOY}/secret {AGI_BIN}/voiceassist")
    purge = voiceassist(rig, "uninstall", "--purge", "--no-reload")
    out = text(purge)
    assert purge.returncode == 0 and "Traceback" not in out, out
    assert f"ignoring {LEGACY_MANIFEST}" in out
    assert f"ignoring the manifest's {DECOY}/secret" in out and f"ignoring the manifest's {DECOY}/dir" in out
    assert f"left {WRAPPER} alone: it is now a symbolic link" in out
    assert snapshot(decoy) == before
    # Our own things are gone; the asterisk user's links inside the data directories went with them.
    assert not rig.host_path(ANSWERS).exists() and not rig.host_path(ANSWERS).is_symlink()
    assert not rig.host_path(CONF).exists() and not list(rig.host_path(PROMPTS).glob("*.ulaw"))
    as_asterisk(rig, f"rm -f {AGI_BIN}/voiceassist {AGI_BIN}/.voiceassist.voiceassist-tmp {LOG}")


# -- 2. a config or knowledge file others could write -----------------------------------------------
KNOWLEDGE = "/etc/asterisk/voiceassist-knowledge.md"   # /etc/asterisk belongs to asterisk


def refused_by_every_root_command(rig, question: str, wanted: str, fix: str) -> None:
    for command in ROOT_COMMANDS:
        args = [f"{question}.wav" if a == "/tmp/question.wav" else a for a in command]
        result = voiceassist(rig, *args)
        line = one_clear_line(result)
        assert result.returncode == 2, (command, text(result))
        assert wanted in line and f"; fix: {fix}" in line, (command, line)
    doctor = voiceassist(rig, "doctor")
    report = text(doctor)
    assert doctor.returncode == 1 and "Traceback" not in report, report
    assert re.search(rf"FAIL\s+config\s+{re.escape(wanted)}.*\n\s+fix: {re.escape(fix)}", report), report


def test_config_or_knowledge_file_others_can_write_is_refused_by_every_root_command(pbx, emulators, question):
    rig = pbx
    installed = voiceassist(rig, "install")
    assert installed.returncode == 0, text(installed)
    conf = rig.host_path(CONF)
    with open(conf, "a") as handle:
        handle.write("\n" + provider_sections(rig_conf(emulators)))
    upgrade = voiceassist(rig, "db", "upgrade")  # the trusted config: root's commands work
    assert upgrade.returncode == 0 and "schema upgraded" in text(upgrade), text(upgrade)
    ownership = (conf.stat().st_uid, conf.stat().st_gid, conf.stat().st_mode & 0o777)
    assert ownership == (0, ASTERISK_UID, 0o640)
    permission_fix = f"chown root:asterisk {CONF} && chmod 0640 {CONF}"

    os.chown(conf, ASTERISK_UID, ASTERISK_UID)  # owned by asterisk
    refused_by_every_root_command(rig, question, f"refusing the config file {CONF}: owner asterisk, mode 0640",
                                  permission_fix)
    # The same file serves the asterisk user's own calls: nothing to gain from a file it could write.
    call = place_call(rig, "7701", [question], context="voiceassist")
    assert_answered_as_asterisk(rig, call, "7701")
    os.chown(conf, 0, ASTERISK_UID)

    conf.chmod(0o660)  # group-writable: every asterisk process could change it
    refused_by_every_root_command(rig, question, f"refusing the config file {CONF}: owner root, mode 0660",
                                  permission_fix)
    conf.chmod(0o640)

    real = conf.with_name("real.conf")
    conf.rename(real)
    conf.symlink_to("real.conf")  # even root's own link: a root command follows none to its settings
    refused_by_every_root_command(rig, question, f"refusing the config file {CONF}: it is a symbolic link",
                                  f"replace the link by the file itself (rm {CONF}, then write it there)")
    conf.unlink()
    real.rename(conf)

    knowledge = rig.host_path(KNOWLEDGE)
    knowledge.write_text("Q: What are your opening hours?\nA: Nine to five.\n")
    os.chown(knowledge, ASTERISK_UID, ASTERISK_UID)
    with open(conf, "a") as handle:
        handle.write(f"\n[general]\nknowledge_file = {KNOWLEDGE}\n")
    refused_by_every_root_command(
        rig, question, f"refusing the knowledge file {KNOWLEDGE}: /etc/asterisk is owner asterisk",
        f"install -d -o root -g asterisk -m 0750 /etc/voiceassist && mv {KNOWLEDGE} /etc/voiceassist/")
    call = place_call(rig, "7702", [question], context="voiceassist")
    assert_answered_as_asterisk(rig, call, "7702")
    conf.write_text(conf.read_text().replace(f"\n[general]\nknowledge_file = {KNOWLEDGE}\n", ""))
    knowledge.unlink()
    assert voiceassist(rig, "db", "status").returncode == 0


# -- 3. FreePBX's owner and mode of extensions_custom.conf ------------------------------------------
def test_extensions_custom_conf_keeps_its_owner_and_mode_across_uninstall_and_install(pbx):
    rig = pbx
    custom = rig.host_path("/etc/asterisk/extensions_custom.conf")
    os.chown(custom, ASTERISK_UID, ASTERISK_UID)  # as `fwconsole chown` leaves it
    custom.chmod(0o640)

    def owner_and_mode() -> tuple[int, int, int]:
        info = custom.lstat()
        return info.st_uid, info.st_gid, info.st_mode & 0o7777

    removed = voiceassist(rig, "uninstall")
    assert removed.returncode == 0, text(removed)
    assert custom.read_text() == ADMIN_LINES and owner_and_mode() == (ASTERISK_UID, ASTERISK_UID, 0o640)
    added = voiceassist(rig, "install")
    assert added.returncode == 0 and "add the [voiceassist] contexts" in text(added), text(added)
    assert "; BEGIN voiceassist" in custom.read_text() and owner_and_mode() == (ASTERISK_UID, ASTERISK_UID, 0o640)
    # Asterisk, running as asterisk, still reads it: the contexts are loaded.
    assert "voiceassist-flow" in rig.cli("dialplan show 8008@voiceassist")


# -- 4. plain Asterisk: Debian's stock extensions.conf ------------------------------------------------
STOCK_EXTENSIONS = "/usr/share/asterisk/conf/samples/extensions.conf.sample"  # what Debian installs as extensions.conf
PHONES = "\n[va-phones]\n; the admin's context for the phones, as the README says\ninclude => voiceassist\n"


def doctor_checks(rig) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(voiceassist(rig, "doctor", "--json").stdout)}


def test_stock_debian_extensions_conf_is_made_to_load_our_contexts_by_doctors_fix(pbx, question):
    rig = pbx
    extensions = rig.host_path("/etc/asterisk/extensions.conf")
    stock = rig.host_path(STOCK_EXTENSIONS).read_text()
    assert not re.search(r"(?m)^\s*#include", stock), "Debian's stock extensions.conf includes nothing"
    # The rig's test callers live in extensions_rig.conf (the admin's own include); nothing else changes.
    harness = stock + "\n#include extensions_rig.conf\n"
    extensions.write_text(harness)
    os.chown(extensions, ASTERISK_UID, ASTERISK_UID)
    extensions.chmod(0o640)  # as Debian ships it
    with open(rig.host_path("/etc/asterisk/extensions_rig.conf"), "a") as handle:
        handle.write(PHONES)
    rig.cli("dialplan reload")
    assert "voiceassist-flow" not in rig.cli("dialplan show 8008@voiceassist")
    dialplan = doctor_checks(rig)["dialplan"]
    assert dialplan["status"] == "FAIL" and "does not #include extensions_custom.conf" in dialplan["detail"], dialplan
    # The fix line, exactly as doctor prints it, one command after the other.
    for command in dialplan["fix"].split(";"):
        result = subprocess.run([*as_user(rig), "env", "PATH=/opt/voiceassist/venv/bin:/usr/sbin:/usr/bin:/bin",
                                 "sh", "-c", command.strip()], capture_output=True, timeout=120)
        assert result.returncode == 0 and "Traceback" not in text(result), (command, text(result))
    assert doctor_checks(rig)["dialplan"]["status"] == "OK"
    text_now = extensions.read_text()
    assert text_now.startswith(harness) and "\n#include extensions_custom.conf\n; END voiceassist" in text_now
    assert extensions.stat().st_uid == ASTERISK_UID and extensions.stat().st_mode & 0o777 == 0o640
    call = place_call(rig, "7703", [question], context="va-phones")
    assert_answered_as_asterisk(rig, call, "7703")
    # uninstall takes its include out again, install puts it back.
    assert voiceassist(rig, "uninstall", "--no-reload").returncode == 0
    assert extensions.read_text() == harness
    assert voiceassist(rig, "install").returncode == 0


# -- 5. one source of truth for the FastAGI address ---------------------------------------------------
def test_installed_fastagi_url_follows_the_configured_port(pbx, question):
    rig = pbx
    conf = rig.host_path(CONF)
    original = conf.read_text()
    assert "\nport = 4573\n" in original
    conf.write_text(original.replace("\nport = 4573\n", "\nport = 4599\n"))
    try:
        dialplan = doctor_checks(rig)["dialplan"]
        assert dialplan["status"] == "FAIL", dialplan
        assert "dials agi://127.0.0.1:4573/voiceassist" in dialplan["detail"]
        assert "says agi://127.0.0.1:4599/voiceassist" in dialplan["detail"]
        out = text(voiceassist(rig, "install", "--fastagi"))
        assert "update the [voiceassist] contexts" in out and "write systemd unit" in out, out
        assert "agi://127.0.0.1:4599/voiceassist" in rig.cli("dialplan show 8008@voiceassist-fastagi")
        assert doctor_checks(rig)["dialplan"]["status"] == "OK"
        unit = rig.host_path("/etc/systemd/system/voiceassist.service").read_text()
        settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
        assert "127.0.0.1:4599" in settings["Description"]
        # What systemd would run (ExecStart as User=) answers a call dialled at the new address.
        server = subprocess.Popen([*as_user(rig, settings["User"]), "env", settings["Environment"],
                                   *settings["ExecStart"].split()],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            seen: list[str] = []
            while not any("listening" in line for line in seen):
                line = server.stdout.readline()
                if not line:
                    break
                seen.append(line)
            assert any("listening on 127.0.0.1:4599" in line for line in seen), seen
            call = place_call(rig, "7704", [question], context="voiceassist-fastagi")
            assert_answered_as_asterisk(rig, call, "7704")
        finally:
            server.terminate()
            remaining, _ = server.communicate(timeout=60)
        assert "Traceback" not in remaining
    finally:
        conf.write_text(original)
    assert voiceassist(rig, "install").returncode == 0
    assert "agi://127.0.0.1:4573/voiceassist" in rig.cli("dialplan show 8008@voiceassist-fastagi")


# -- 6. retention and log rotation -------------------------------------------------------------------
def test_install_schedules_the_daily_prune_as_asterisk_and_log_rotation_and_uninstall_removes_them(pbx):
    rig = pbx
    cron, rotate = rig.host_path(CRON), rig.host_path(LOGROTATE)
    for path in (cron, rotate):  # no systemd in the chroot: the cron file
        assert (path.stat().st_uid, path.stat().st_mode & 0o777) == (0, 0o644), path
    assert f"{LOG} {{" in rotate.read_text() and "su asterisk asterisk" in rotate.read_text()
    assert not re.search(r"(?m)^\s*copytruncate", rotate.read_text())  # the handler reopens the file
    lines = cron.read_text().splitlines()
    environment = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    assert environment["VOICEASSIST_CONFIG"] == CONF
    job = next(line for line in lines if re.match(r"^\d", line)).split(None, 6)
    user, command = job[5], job[6]
    assert user == "asterisk" and command.endswith("db prune >/dev/null")
    # Run the job as cron would: an old call goes, the recent ones stay.
    conf = rig.host_path(CONF)
    original = conf.read_text()
    conf.write_text(original.replace("retention_days = 0", "retention_days = 1"))
    try:
        subprocess.run([*as_user(rig, "asterisk"), "/opt/voiceassist/venv/bin/python", "-c",
                        "import sqlite3; db = sqlite3.connect(%r); db.execute(\"UPDATE voiceassist_calls SET "
                        "started_at = '2020-01-01 00:00:00.000000' WHERE caller_number = '7701'\"); db.commit()"
                        % INSTALLED_DB], check=True)
        result = subprocess.run([*as_user(rig, user), "env", *(f"{k}={v}" for k, v in environment.items()),
                                 "sh", "-c", command], capture_output=True, timeout=120)
        assert result.returncode == 0 and not result.stderr, text(result)
        import sqlite3
        with sqlite3.connect(rig.host_path(INSTALLED_DB)) as db:
            callers = {row[0] for row in db.execute("SELECT caller_number FROM voiceassist_calls")}
        assert "7701" not in callers and "7702" in callers, callers
    finally:
        conf.write_text(original)
    planned = text(voiceassist(rig, "uninstall", "--dry-run"))
    assert f"would remove {CRON}" in planned and f"would remove {LOGROTATE}" in planned, planned
    assert voiceassist(rig, "uninstall", "--no-reload").returncode == 0
    assert not cron.exists() and not rotate.exists()
    planned = text(voiceassist(rig, "install", "--dry-run"))
    assert f"would write {CRON}" in planned and f"would write {LOGROTATE}" in planned, planned


# -- 7. websocket_client.conf: a planted link, and the password kept out of every output ------------
WEBSOCKET_CONF = "/etc/asterisk/websocket_client.conf"   # /etc/asterisk belongs to asterisk
WEBSOCKET_PASSWORD = "Sesame-0b7d2a"


def test_websocket_client_conf_link_is_refused_and_the_password_never_printed(pbx):
    rig = pbx
    installed = voiceassist(rig, "install", "--no-reload")  # the config (also when this test runs alone)
    assert installed.returncode == 0, text(installed)
    conf = rig.host_path(CONF)
    original = conf.read_text()
    live = original.replace("transport = audiosocket", "transport = websocket", 1)
    conf.write_text(re.sub(r"(?m)^;websocket_password =.*$", f"websocket_password = {WEBSOCKET_PASSWORD}", live))
    decoy = rig.host_path(DECOY)
    before = snapshot(decoy)
    websocket = rig.host_path(WEBSOCKET_CONF)
    try:
        as_asterisk(rig, f"rm -f {WEBSOCKET_CONF} && ln -s {DECOY}/secret {WEBSOCKET_CONF}")
        planned = voiceassist(rig, "install", "--dry-run")
        assert planned.returncode == 0 and "would add the [voiceassist] connection" in text(planned), text(planned)
        assert WEBSOCKET_PASSWORD not in text(planned)
        refused = voiceassist(rig, "install", "--no-reload")
        line = one_clear_line(refused)
        assert refused.returncode == 1 and f"{WEBSOCKET_CONF} is a symbolic link" in line and "refused" in line, line
        assert WEBSOCKET_PASSWORD not in text(refused)
        assert snapshot(decoy) == before, "root wrote through the asterisk user's link"
        check = doctor_checks(rig)["websocket_client.conf"]
        assert check["status"] == "FAIL" and "is a symbolic link" in check["detail"], check

        # The link gone: a new file that only root and the asterisk group may read (it holds the password).
        as_asterisk(rig, f"rm {WEBSOCKET_CONF}")
        added = voiceassist(rig, "install", "--no-reload")
        assert added.returncode == 0 and WEBSOCKET_PASSWORD not in text(added), text(added)
        info = websocket.lstat()
        assert stat.S_ISREG(info.st_mode) and (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, ASTERISK_UID, 0o640)
        assert f"password = {WEBSOCKET_PASSWORD}\n" in websocket.read_text()
        # A world-readable file of the admin's: our password makes install take the others' read bit away.
        websocket.chmod(0o644)
        conf.write_text(conf.read_text().replace(WEBSOCKET_PASSWORD, WEBSOCKET_PASSWORD + "-2"))
        assert voiceassist(rig, "install", "--no-reload").returncode == 0
        assert websocket.stat().st_mode & 0o777 == 0o640
        assert snapshot(decoy) == before
    finally:
        if websocket.is_symlink():
            websocket.unlink()
        conf.write_text(original)
    # Back to transport = audiosocket: install takes its connection (and the password) out again.
    back = voiceassist(rig, "install", "--no-reload")
    assert back.returncode == 0 and f"remove the voiceassist connection from {WEBSOCKET_CONF}" in text(back), text(back)
    assert "; BEGIN voiceassist" not in websocket.read_text() and WEBSOCKET_PASSWORD not in websocket.read_text()
