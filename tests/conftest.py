from __future__ import annotations

import os

import pytest

from harness.emulators import (
    GeminiEmulator,
    GoogleTTSEmulator,
    OpenAIEmulator,
    RealtimeEmulator,
    SpeechEmulator,
    SpeechGrpcEmulator,
)
from harness.emulators.ai_server import AIServerEmulator
from harness.emulators.gemini_live import GeminiLiveEmulator
from harness.emulators.google_tts_grpc import GoogleTTSGrpcEmulator


# An admin's root shell has umask 022; voiceassist's own entry point sets 027 for the files it
# makes. Tests that run that entry point in this process must not leave 027 behind for what comes
# next: the rig's admin steps (a venv, directories) would become unreadable to the asterisk user.
os.umask(0o022)


@pytest.fixture(autouse=True)
def _admin_umask():
    yield
    os.umask(0o022)


@pytest.fixture(scope="session")
def emulators():
    servers = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
               "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(autouse=True)
def _reset_emulators(request):
    if "emulators" in request.fixturenames:
        for server in request.getfixturevalue("emulators").values():
            server.reset()


@pytest.fixture(scope="session")
def speech_grpc():
    """Google Speech's gRPC StreamingRecognize (v1 and v2), for streaming speech-to-text."""
    server = SpeechGrpcEmulator()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _reset_speech_grpc(request):
    if "speech_grpc" in request.fixturenames:
        request.getfixturevalue("speech_grpc").reset()


@pytest.fixture(scope="session")
def google_tts_grpc(emulators):
    """Google Text-to-Speech's gRPC StreamingSynthesize, on one port with the REST emulator
    (``emulators["google_tts"]``), for streaming text-to-speech."""
    server = GoogleTTSGrpcEmulator(rest=emulators["google_tts"])
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _reset_google_tts_grpc(request):
    if "google_tts_grpc" in request.fixturenames:
        request.getfixturevalue("google_tts_grpc").reset()


@pytest.fixture(scope="session")
def ai_server():
    """An AI server speaking the external-AI WebSocket protocol (harness/emulators/ai_server.py)."""
    server = AIServerEmulator()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _reset_ai_server(request):
    if "ai_server" in request.fixturenames:
        request.getfixturevalue("ai_server").reset()


@pytest.fixture(scope="session")
def gemini_live():
    """Gemini's Live API (BidiGenerateContent over TLS WebSocket: the SDK always uses wss), with a
    certificate of its own for 127.0.0.1 (harness/emulators/gemini_live.py)."""
    server = GeminiLiveEmulator()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _reset_gemini_live(request):
    if "gemini_live" in request.fixturenames:
        request.getfixturevalue("gemini_live").reset()


# -- real database servers ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mariadb():
    from harness.dbservers import MariaDBServer, servers_available

    if (reason := servers_available()):
        pytest.fail(reason)
    server = MariaDBServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgresql():
    from harness.dbservers import PostgreSQLServer, servers_available

    if (reason := servers_available()):
        pytest.fail(reason)
    server = PostgreSQLServer()
    yield server
    server.close()


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database of each kind (the SQLAlchemy URL voiceassist makes of the admin's)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/voiceassist.db"
    from voiceassist.storage.database_url import with_driver

    server = request.getfixturevalue(request.param)
    return with_driver(server.url(server.create_database()))


# -- the real Asterisk rig --------------------------------------------------------------------------
import os
import shutil

from harness.helpers import rig_conf
from harness.rig.asterisk import SHARED, AsteriskRig
from harness.rig.calls import RIG_DIALPLAN
from harness.servers import FastAGIProcess


@pytest.fixture(scope="session")
def rig(emulators):
    if os.geteuid() != 0:
        pytest.fail("the Asterisk rig needs root (chroot, mount): run the README's test command as root")
    asterisk = AsteriskRig()
    asterisk.build()
    asterisk.mount()
    try:
        for stale in ("voiceassist.db", "voiceassist.db-wal", "voiceassist.db-shm", "voiceassist.log", "calls", "spool"):
            path = SHARED / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        asterisk.install_package()
        asterisk.configure(rig_conf(emulators), RIG_DIALPLAN)
        asterisk.start()
        yield asterisk
    finally:
        asterisk.stop()
        asterisk.unmount()


@pytest.fixture
def rig_config(rig, emulators):
    """Rewrite the chroot's voiceassist.conf for one test (process AGI reads it per call)."""
    def write(extra: str = "") -> None:
        rig.write_voiceassist_conf(rig_conf(emulators, extra))
    yield write
    rig.write_voiceassist_conf(rig_conf(emulators))


@pytest.fixture(scope="session")
def fastagi_config_path(emulators, rig):
    path = SHARED / "fastagi.conf"
    path.write_text(rig_conf(emulators))
    return path


@pytest.fixture(scope="session")
def fastagi(fastagi_config_path):
    server = FastAGIProcess(fastagi_config_path)
    yield server
    server.stop()
