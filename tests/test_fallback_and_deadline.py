"""Whole turns over FastAGI (byte-level fake Asterisk, real SDKs, emulators): fallback chains,
the turn's deadline, credential errors, and what the caller hears in each case."""

from __future__ import annotations

import threading
import time

import pytest

from harness.emulators import Fail, Hang
from harness.fake_asterisk import FakeAsterisk
from harness.helpers import config_for
from tests.test_fastagi_server import turn_env
from voiceassist.asterisk.fastagi import FastAGIServer
from voiceassist.call.assistant import Assistant

APOLOGY = "custom/voiceassist/cant-answer"


class Turn:
    """Run one turn through a FastAGI server built from ``extra`` config; keep what happened."""

    def __init__(self, emulators, tmp_path, extra: str, uniqueid: str = "1700000000.1") -> None:
        self.assistant = Assistant(config_for(emulators, tmp_path, extra=extra))
        server = FastAGIServer(("127.0.0.1", 0), self.assistant, max_calls=2, read_timeout=10)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            client = FakeAsterisk(server.server_address[1], turn_env(tmp_path, uniqueid))
            started = time.monotonic()
            self.commands = client.run()
            self.seconds = time.monotonic() - started
            self.variables = client.variables()
        finally:
            server.shutdown()
            server.server_close()
        _, turns = self.assistant.journal().store().call_rows(uniqueid)
        self.row = turns[0]
        self.verbose = [c for c in self.commands if c.startswith("VERBOSE")]
        self.streamed = [c for c in self.commands if c.startswith("STREAM FILE")]


def test_tts_fallback_answers_when_the_first_provider_fails_and_records_who_answered(emulators, tmp_path):
    emulators["tts"].queue(Fail(500), Fail(500))
    turn = Turn(emulators, tmp_path, "[tts]\nprovider = openai, google\n[general]\nplayback = file\n")
    assert turn.row["status"] == "ok" and turn.row["tts_provider"] == "google_tts"
    assert turn.variables["VA_ANSWER"].endswith("/answer-1")
    assert any("openai_tts failed, trying the next provider" in v for v in turn.verbose)
    assert len(emulators["google_tts"].requests) == 1


def test_fallback_skips_a_provider_that_cannot_even_be_set_up(emulators, tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    turn = Turn(emulators, tmp_path, "[llm]\nprovider = gemini, openai\n[gemini]\napi_key =\n")
    assert turn.row["status"] == "ok" and turn.row["llm_provider"] == "openai_chat"
    assert any("[gemini] api_key or GEMINI_API_KEY" in v for v in turn.verbose)


def test_stt_fallback_to_openai_transcription(emulators, tmp_path):
    emulators["speech"].queue(Fail(503), Fail(503))
    turn = Turn(emulators, tmp_path, "[stt]\nprovider = google, openai\n")
    assert turn.row["status"] == "ok" and turn.row["stt_provider"] == "openai_stt"
    assert turn.row["transcript"] == "What are your opening hours?"


def test_missing_key_is_one_clear_line_and_the_caller_hears_the_apology(emulators, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    turn = Turn(emulators, tmp_path, "[openai]\napi_key =\n[tts]\nprovider = openai\n")
    assert turn.row["status"] == "tts_error"
    assert turn.variables["VA_ANSWER"] == APOLOGY and not turn.streamed
    errors = [v for v in turn.verbose if "[TTS]" in v and "failed" in v]
    assert len(errors) == 1 and "[openai_tts] api_key, [openai] api_key or OPENAI_API_KEY" in errors[0]
    assert "\n" not in errors[0]
    logged = [r for r in caplog.records if "[TTS]" in r.getMessage() and "failed" in r.getMessage()]
    assert len(logged) == 1 and "[openai_tts] api_key, [openai] api_key or OPENAI_API_KEY" in logged[0].getMessage()
    assert logged[0].exc_info is None  # one line, no traceback


@pytest.mark.parametrize("playback", ["pipelined", "file"])
def test_turn_deadline_cuts_a_hanging_llm_short_with_the_apology(emulators, tmp_path, playback):
    emulators["gemini"].queue(Hang(8), Hang(8))
    # Gemini's own timeout (2 s) and retry would take over 4 s; the turn may take 1.5 s.
    turn = Turn(emulators, tmp_path, f"[general]\nturn_deadline = 1.5\nplayback = {playback}\n")
    assert turn.row["status"] == "llm_error"
    assert turn.variables["VA_ANSWER"] == APOLOGY
    assert turn.seconds < 3.0
    assert "turn_deadline" in turn.row["error"] or "Timeout" in turn.row["error"]


def test_no_fallback_is_tried_once_the_deadline_has_passed(emulators, tmp_path):
    emulators["tts"].queue(Hang(8), Hang(8))
    turn = Turn(emulators, tmp_path, "[general]\nturn_deadline = 1.5\n[tts]\nprovider = openai, google\n")
    assert turn.row["status"] == "tts_error" and turn.variables["VA_ANSWER"] == APOLOGY
    assert emulators["google_tts"].requests == []
    assert turn.seconds < 3.0


def test_pipelined_answer_plays_its_first_sentence_before_the_reply_is_complete(emulators, tmp_path):
    emulators["gemini"].reply = lambda body: ("We open at eight in the morning on weekdays. " * 1
                                              + "On Saturdays we open at nine and close at one. "
                                              + "On Sundays we are closed all day long.")
    emulators["gemini"].tokens_per_second = 10  # 26 words: about 2.6 s for the whole reply
    turn = Turn(emulators, tmp_path, "")
    assert turn.row["status"] == "ok" and len(turn.streamed) == 3
    # The first sentence's audio was ready long before the last word was generated.
    assert turn.row["first_audio_ms"] + 1000 < turn.row["stt_ms"] + turn.row["llm_ms"]
    assert turn.row["llm_first_ms"] < 300


def test_pipelined_tts_failure_after_the_first_sentence_keeps_what_was_said(emulators, tmp_path):
    emulators["gemini"].reply = lambda body: "We open at eight in the morning. We close at six in the evening."
    original = emulators["tts"].answer
    calls = []

    def fail_second(request):
        calls.append(1)
        if len(calls) > 1:
            return 500, b'{"error": {"message": "down", "type": "server_error", "param": null, "code": null}}', "application/json"
        return original(request)

    emulators["tts"].answer = fail_second
    try:
        turn = Turn(emulators, tmp_path, "")
    finally:
        emulators["tts"].answer = original
    assert turn.row["status"] == "ok" and len(turn.streamed) == 1
    assert "answer cut short after 1 sentences" in turn.row["error"]
    assert turn.row["reply"] == "We open at eight in the morning."


def test_the_deadline_counts_from_the_end_of_the_callers_speech(emulators, tmp_path):
    """The dialplan says the caller stopped talking 2.5 s before this turn began (end-of-question
    detection, AGI start): a 4 s deadline leaves the turn 1.5 s, not 4."""
    from harness.fake_asterisk import fastagi_env, speech_wav

    emulators["gemini"].queue(Hang(8), Hang(8))
    uniqueid = "1700000000.3"
    call_dir = tmp_path / "spool" / "voiceassist" / uniqueid
    call_dir.mkdir(parents=True)
    wav = speech_wav(call_dir / "question-1.wav")
    assistant = Assistant(config_for(emulators, tmp_path, extra="[general]\nturn_deadline = 4\n"))
    server = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=2, read_timeout=10)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        stopped = f"{time.time() - 2.5:.3f}"
        client = FakeAsterisk(server.server_address[1], fastagi_env("voiceassist", uniqueid, [
            "turn", str(wav), "NOISE", "1", str(int(time.time())), "8008", uniqueid, stopped, "0"]))
        started = time.monotonic()
        client.run()
        seconds = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert client.variables()["VA_ANSWER"] == APOLOGY
    assert 1.2 < seconds < 2.8, seconds


class HangsUpWhileThinking(FakeAsterisk):
    """Asterisk whose caller hangs up ``after`` seconds into the turn (FastAGI's HANGUP notice)."""

    def __init__(self, port: int, env: bytes, after: float) -> None:
        super().__init__(port, env)
        self.hung_up_at = 0.0
        threading.Timer(after, self._hang_up).start()

    def _hang_up(self) -> None:
        self.hung_up_at = time.monotonic()
        self.sock.sendall(b"HANGUP\n")


@pytest.mark.parametrize("playback", ["pipelined", "file"])
def test_a_caller_who_hangs_up_while_the_model_thinks_is_stored_as_such(emulators, tmp_path, playback):
    """Not as a success: no first audio, no speech synthesized after the hang-up is known, and the
    call's state never becomes 'answering'."""
    emulators["gemini"].latency = 3.0
    uniqueid = "1700000000.4"
    assistant = Assistant(config_for(emulators, tmp_path, extra=f"[general]\nplayback = {playback}\n"))
    server = FastAGIServer(("127.0.0.1", 0), assistant, max_calls=2, read_timeout=10)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        client = HangsUpWhileThinking(server.server_address[1], turn_env(tmp_path, uniqueid), after=0.8)
        client.run()
        ended = time.monotonic()
    finally:
        server.shutdown()
        server.server_close()
    _, turns = assistant.journal().store().call_rows(uniqueid)
    turn = turns[0]
    assert turn["status"] == "hangup" and "while the assistant was thinking" in turn["error"], turn
    assert turn["first_audio_ms"] is None and turn["speech_to_audio_ms"] is None and turn["answer_path"] is None
    assert emulators["tts"].requests == []
    assert not any('"VA_STATE" "answering"' in c for c in client.commands)
    if playback == "pipelined":  # the turn ends at the hang-up, not when the model finally answers
        assert ended - client.hung_up_at < 1.0, ended - client.hung_up_at
