"""The alternative providers, each with its real SDK against its emulator on loopback: success,
empty result, 429 then success, 500, timeout, truncated/blocked replies, over-long input."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from harness.emulators import Cut, Drop, Fail, Garbage, Hang
from harness.emulators.gemini import ACCESS_TOKEN
from harness.emulators.openai_api import tone_for
from harness.helpers import config_for, talk
from tests.test_providers import speech_pcm
from voiceassist import providers
from voiceassist.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from voiceassist.providers.base import Exchange, Recording


@pytest.fixture
def config(emulators, tmp_path):
    return config_for(emulators, tmp_path)


_made: list = []


@pytest.fixture(autouse=True)
def _close_providers():
    """Each test's providers release their connections when it ends (not whenever the garbage
    collector finds them, inside some later test)."""
    yield
    while _made:
        _made.pop().close()


def make(capability: str, name: str, config):
    provider = providers.create_named(capability, name, config)
    _made.append(provider)
    return provider


def dominant_hz(mulaw: bytes) -> float:
    """The loudest frequency of 8 kHz μ-law audio (decoded with the G.711 formula)."""
    u = ~np.frombuffer(mulaw, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)) - 0x84
    pcm = np.where(u & 0x80, -magnitude, magnitude).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm))
    return float(np.argmax(spectrum) * 8000 / len(pcm))


# -- Google Cloud Text-to-Speech ----------------------------------------------------------------
def test_google_tts_asks_for_8khz_mulaw_and_strips_the_wav_header(emulators, config):
    audio = make("tts", "google", config).synthesize("We open at eight.")
    assert (audio.encoding, audio.sample_rate) == ("mulaw", 8000)
    assert len(audio.data) == 8000 * 1.5  # the samples only: no RIFF header left to click
    assert dominant_hz(audio.data) == pytest.approx(tone_for("We open at eight."), abs=2)
    sent = emulators["google_tts"].requests[-1].json()
    assert sent["audioConfig"]["sampleRateHertz"] == 8000 and sent["audioConfig"]["audioEncoding"] in (5, "MULAW")
    assert sent["voice"]["languageCode"] == "en-US"


def test_google_tts_retries_429_then_succeeds(emulators, config):
    emulators["google_tts"].queue(Fail(429))
    assert make("tts", "google", config).synthesize("Hello.").data
    assert len(emulators["google_tts"].requests) == 2


def test_google_tts_500_twice_is_unavailable(emulators, config):
    emulators["google_tts"].queue(Fail(500), Fail(500))
    with pytest.raises(ProviderUnavailable):
        make("tts", "google", config).synthesize("Hello.")


def test_google_tts_timeout_is_bounded(emulators, config):
    emulators["google_tts"].queue(Hang(4), Hang(4))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        make("tts", "google", config).synthesize("Hello.")
    assert time.monotonic() - started < 5.5


def test_google_tts_splits_text_over_its_5000_byte_limit(emulators, config):
    text = " ".join(f"This is sentence number {n} of a very long answer." for n in range(200))  # ~10 kB
    audio = make("tts", "google", config).synthesize(text)
    sent = [r.json()["input"]["text"] for r in emulators["google_tts"].requests]
    assert len(sent) > 1 and all(len(t.encode()) <= 5000 for t in sent)
    assert " ".join(sent) == text  # nothing lost, no word cut
    assert len(audio.data) == len(sent) * 8000 * 1.5


def test_google_tts_garbage_is_a_provider_error(emulators, config):
    emulators["google_tts"].queue(Garbage())
    with pytest.raises(ProviderError):
        make("tts", "google", config).synthesize("Hello.")


# -- OpenAI Realtime (gpt-realtime-2.1-mini) as text-to-speech ----------------------------------
def test_realtime_tts_reads_the_text_in_mulaw(emulators, config):
    audio = make("tts", "openai_realtime", config).synthesize("We open at eight.")
    assert (audio.encoding, audio.sample_rate) == ("mulaw", 8000)
    assert len(audio.data) == 8000 * 1.5
    assert dominant_hz(audio.data) == pytest.approx(tone_for("We open at eight."), abs=2)
    connection = emulators["realtime"].connections[-1]
    assert connection["path"].startswith("/v1/realtime?model=gpt-realtime-2.1-mini")
    assert connection["headers"]["authorization"] == "Bearer sk-test-openai-key-456"
    update = next(e for e in connection["events"] if e["type"] == "session.update")["session"]
    assert update["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert "exactly as written" in update["instructions"]


def test_realtime_tts_rate_limit_event_is_retried(emulators, config):
    emulators["realtime"].queue(Fail(429))
    assert make("tts", "openai_realtime", config).synthesize("Hello.").data
    assert len(emulators["realtime"].connections) == 2


def test_realtime_tts_insufficient_quota_is_not_retried(emulators, config):
    emulators["realtime"].queue(Fail(429, {"code": "insufficient_quota", "type": "insufficient_quota"}))
    with pytest.raises(ProviderError, match="not retried") as info:
        make("tts", "openai_realtime", config).synthesize("Hello.")
    assert not info.value.retryable and len(emulators["realtime"].connections) == 1


def test_realtime_tts_rejected_key_names_the_setting(emulators, config):
    emulators["realtime"].queue(Fail(401))
    with pytest.raises(ProviderAuthError, match=r"\[openai_realtime\] api_key"):
        make("tts", "openai_realtime", config).synthesize("Hello.")


def test_realtime_tts_failed_response_is_unavailable(emulators, config):
    emulators["realtime"].queue(Garbage(), Garbage())
    with pytest.raises(ProviderUnavailable):
        make("tts", "openai_realtime", config).synthesize("Hello.")


def test_realtime_tts_connection_dropped_mid_audio_is_not_a_short_answer(emulators, config):
    emulators["realtime"].queue(Cut(), Cut())
    with pytest.raises(ProviderError):
        make("tts", "openai_realtime", config).synthesize("Hello.")


def test_realtime_tts_silent_server_times_out(emulators, config):
    emulators["realtime"].queue(Hang(5), Hang(5))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        make("tts", "openai_realtime", config).synthesize("Hello.")
    assert time.monotonic() - started < 6.5


# -- OpenAI-compatible chat completions ---------------------------------------------------------
def test_openai_chat_sends_system_prompt_and_history(emulators, config):
    reply = make("llm", "openai", config).reply(talk(config, "Are you open on Sunday?", [Exchange("Hi", "Hello!")]))
    assert reply == "Answer 2: you asked, Are you open on Sunday?"
    body = emulators["tts"].requests[-1].json()
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["model"] == "gpt-5-mini" and body["max_completion_tokens"] == 300
    assert "temperature" not in body  # gpt-5 models accept only their default


def test_openai_chat_streams_word_by_word(emulators, config):
    pieces = list(make("llm", "openai", config).stream(talk(config, "Hello")))
    assert len(pieces) > 3 and "".join(pieces) == "Answer 1: you asked, Hello"
    assert emulators["tts"].requests[-1].json()["stream"] is True


def test_openai_chat_empty_reply_is_a_bad_response(emulators, config):
    emulators["tts"].empty_reply = True
    with pytest.raises(ProviderBadResponse):
        make("llm", "openai", config).reply(talk(config, "Hello"))
    with pytest.raises(ProviderBadResponse):
        list(make("llm", "openai", config).stream(talk(config, "Hello")))


def test_openai_chat_429_then_success(emulators, config):
    emulators["tts"].queue(Fail(429))
    assert make("llm", "openai", config).reply(talk(config, "Hello"))
    assert len(emulators["tts"].requests) == 2


def test_openai_chat_500_twice_is_unavailable(emulators, config):
    emulators["tts"].queue(Fail(500), Fail(500))
    with pytest.raises(ProviderUnavailable):
        make("llm", "openai", config).reply(talk(config, "Hello"))


def test_openai_chat_timeout(emulators, config):
    emulators["tts"].queue(Hang(4), Hang(4))
    with pytest.raises(ProviderTimeout):
        make("llm", "openai", config).reply(talk(config, "Hello"))


def test_openai_chat_stream_cut_after_the_first_words_is_an_error(emulators, config):
    emulators["tts"].queue(Cut())
    stream = make("llm", "openai", config).stream(talk(config, "Hello"))
    assert next(stream)
    with pytest.raises(ProviderError):
        list(stream)


def test_openai_chat_base_url_serves_compatible_servers(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra=f"[openai_chat]\nbase_url = {emulators['tts'].base_url}/v1\n"
                                                   "api_key = ollama\nmodel = llama3.2\ntoken_field = max_tokens\n"
                                                   "temperature = 0.2\n")
    make("llm", "openai", config).reply(talk(config, "Hello"))
    request = emulators["tts"].requests[-1]
    assert request.headers["authorization"] == "Bearer ollama"
    assert request.json()["max_tokens"] == 300 and request.json()["temperature"] == 0.2


# -- Gemini streaming and Vertex AI -------------------------------------------------------------
def test_gemini_streams_word_by_word(emulators, config):
    pieces = list(make("llm", "gemini", config).stream(talk(config, "Hello")))
    assert len(pieces) > 3 and "".join(pieces) == "Answer 1: you asked, Hello"
    assert ":streamGenerateContent" in emulators["gemini"].requests[-1].path


def test_gemini_stream_blocked_is_a_bad_response(emulators, config):
    emulators["gemini"].blocked = True
    with pytest.raises(ProviderBadResponse):
        list(make("llm", "gemini", config).stream(talk(config, "Hello")))


@pytest.fixture
def service_account(emulators, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "sa.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test-proj", "private_key_id": "k1",
        "private_key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode(),
        "client_email": "agi@test-proj.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"{emulators['gemini'].base_url}/token"}))
    path.chmod(0o600)
    return path


def test_gemini_on_vertex_exchanges_the_service_account_for_a_token(emulators, tmp_path, service_account):
    config = config_for(emulators, tmp_path, extra=f"[gemini]\nbackend = vertex\nproject = test-proj\n"
                                                   f"location = europe-west1\ncredentials_file = {service_account}\n")
    assert make("llm", "gemini", config).reply(talk(config, "Hello")) == "Answer 1: you asked, Hello"
    request = emulators["gemini"].requests[-1]
    assert request.path.startswith("/v1beta1/projects/test-proj/locations/europe-west1/publishers/google/models/"
                                   "gemini-2.5-flash:generateContent")
    assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert len(emulators["gemini"].token_requests) == 1


def test_gemini_on_vertex_without_project_names_the_settings(emulators, tmp_path, service_account):
    config = config_for(emulators, tmp_path, extra=f"[gemini]\nbackend = vertex\ncredentials_file = {service_account}\n")
    with pytest.raises(ProviderAuthError, match=r"\[gemini\] project and location"):
        make("llm", "gemini", config)


def test_gemini_on_vertex_with_a_missing_key_file_names_it(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra="[gemini]\nbackend = vertex\nproject = p\nlocation = l\n"
                                                   "credentials_file = /nonexistent/sa.json\n")
    with pytest.raises(ProviderAuthError, match="/nonexistent/sa.json does not exist"):
        make("llm", "gemini", config)


# -- Google Speech v2 and OpenAI transcription --------------------------------------------------
def test_google_speech_v2_uses_the_recognizer_path_and_telephony(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra="[google_speech]\napi_version = v2\nproject = test-proj\n")
    transcript = make("stt", "google", config).transcribe(Recording(speech_pcm()))
    assert transcript.text == "What are your opening hours?"
    request = emulators["speech"].requests[-1]
    assert request.path.startswith("/v2/projects/test-proj/locations/global/recognizers/_:recognize")
    sent = request.json()["config"]
    assert sent["model"] == "telephony" and sent["languageCodes"] == ["en-US"]
    assert sent["explicitDecodingConfig"]["sampleRateHertz"] == 8000


def test_google_speech_v2_silence_and_errors(emulators, tmp_path):
    config = config_for(emulators, tmp_path, extra="[google_speech]\napi_version = v2\nproject = test-proj\n")
    stt = make("stt", "google", config)
    assert stt.transcribe(Recording(b"\0\0" * 8000)).text == ""
    emulators["speech"].queue(Fail(429), Fail(429))
    with pytest.raises(ProviderRateLimited):
        stt.transcribe(Recording(speech_pcm()))


def test_openai_transcription_sends_the_8khz_wav(emulators, config):
    transcript = make("stt", "openai", config).transcribe(Recording(speech_pcm()))
    assert transcript.text == "What are your opening hours?"
    request = emulators["tts"].requests[-1]
    assert request.path == "/v1/audio/transcriptions"
    assert b"gpt-4o-mini-transcribe" in request.body and b"RIFF" in request.body


def test_openai_transcription_of_silence_is_empty(emulators, config):
    assert make("stt", "openai", config).transcribe(Recording(b"\0\0" * 8000)).text == ""


def test_openai_transcription_429_then_success_and_dropped_connection(emulators, config):
    stt = make("stt", "openai", config)
    emulators["tts"].queue(Fail(429))
    assert stt.transcribe(Recording(speech_pcm())).text
    emulators["tts"].queue(Drop(), Drop())
    with pytest.raises(ProviderUnavailable):
        stt.transcribe(Recording(speech_pcm()))


# -- OpenAI /v1/audio/speech over its length limit ----------------------------------------------
def test_openai_tts_splits_input_over_4096_characters(emulators, config):
    text = " ".join(f"Sentence {n} of a long reply that goes on." for n in range(150))  # ~6 kB
    audio = make("tts", "openai", config).synthesize(text)
    sent = [r.json()["input"] for r in emulators["tts"].requests]
    assert len(sent) == 2 and all(len(t) <= 4096 for t in sent) and " ".join(sent) == text
    assert len(audio.data) == 2 * (2 * 24000 * 1.5)
