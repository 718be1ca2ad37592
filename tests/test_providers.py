"""Each provider with its real SDK against its emulator: success, failures, retries, timeouts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from harness.emulators import Drop, Fail, Garbage, Hang
from harness.emulators.openai_api import tone_for
from harness.helpers import config_for, talk
from voiceassist import providers
from voiceassist.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from voiceassist.providers.base import Exchange, Recording


def speech_pcm(seconds: float = 1.0, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(1).normal(0, 3000, len(t)) * (np.sin(2 * np.pi * 3 * t) > 0)
    return noise.astype("<i2").tobytes()


@pytest.fixture
def config(emulators, tmp_path):
    return config_for(emulators, tmp_path)


def test_google_speech_sends_8khz_linear16_telephony_and_returns_transcript(emulators, config):
    stt = providers.create("stt", config)
    transcript = stt.transcribe(Recording(speech_pcm()))
    assert transcript.text == "What are your opening hours?"
    assert transcript.confidence == pytest.approx(0.92)
    sent = emulators["speech"].requests[-1].json()["config"]
    assert sent["sampleRateHertz"] == 8000 and sent["encoding"] in (1, "LINEAR16")
    assert sent["model"] == "telephony" and sent["languageCode"] == "en-US"


def test_google_speech_silence_gives_empty_transcript(emulators, config):
    assert providers.create("stt", config).transcribe(Recording(b"\0\0" * 8000)).text == ""


def test_google_speech_retries_429_then_succeeds(emulators, config):
    emulators["speech"].queue(Fail(429))
    assert providers.create("stt", config).transcribe(Recording(speech_pcm())).text
    assert len(emulators["speech"].requests) == 2


def test_google_speech_500_twice_is_unavailable(emulators, config):
    emulators["speech"].queue(Fail(500), Fail(503))
    with pytest.raises(ProviderUnavailable):
        providers.create("stt", config).transcribe(Recording(speech_pcm()))


def test_google_speech_timeout_is_mapped_and_bounded(emulators, config):
    emulators["speech"].queue(Hang(5), Hang(5))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        providers.create("stt", config).transcribe(Recording(speech_pcm()))
    assert time.monotonic() - started < 6  # 2 attempts x 2 s, never the SDK's 5000 s


def test_gemini_passes_history_as_chat_and_system_prompt(emulators, config):
    llm = providers.create("llm", config)
    reply = llm.reply(talk(config, "Are you open on Sunday?", [Exchange("Hi", "Hello!")]))
    assert reply == "Answer 2: you asked, Are you open on Sunday?"
    body = emulators["gemini"].requests[-1].json()
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert "telephone" in body["systemInstruction"]["parts"][0]["text"]
    assert "/models/gemini-2.5-flash:generateContent" in emulators["gemini"].requests[-1].path


def test_gemini_blocked_reply_is_a_bad_response(emulators, config):
    emulators["gemini"].blocked = True
    with pytest.raises(ProviderBadResponse):
        providers.create("llm", config).reply(talk(config, "hello"))


def test_gemini_garbage_is_a_provider_error(emulators, config):
    emulators["gemini"].queue(Garbage())
    with pytest.raises(ProviderError):
        providers.create("llm", config).reply(talk(config, "hello"))


def test_gemini_rate_limit_after_retries(emulators, config):
    emulators["gemini"].queue(Fail(429), Fail(429))
    with pytest.raises(ProviderRateLimited):
        providers.create("llm", config).reply(talk(config, "hello"))
    assert len(emulators["gemini"].requests) == 2


def test_gemini_timeout(emulators, config):
    emulators["gemini"].queue(Hang(4), Hang(4))
    with pytest.raises(ProviderTimeout):
        providers.create("llm", config).reply(talk(config, "hello"))


def test_openai_tts_returns_24khz_pcm_of_the_reply(emulators, config):
    audio = providers.create("tts", config).synthesize("Hello there.")
    assert audio.encoding == "s16le" and audio.sample_rate == 24000
    assert len(audio.data) == 2 * 24000 * 1.5
    body = emulators["tts"].requests[-1].json()
    assert body["model"] == "gpt-4o-mini-tts" and body["voice"] == "coral" and body["response_format"] == "pcm"
    assert body["instructions"]
    assert tone_for("Hello there.")


def test_openai_tts_insufficient_quota_is_not_retried(emulators, config):
    emulators["tts"].queue(Fail(429, {"error": {"message": "quota", "type": "insufficient_quota",
                                                "param": None, "code": "insufficient_quota"}}))
    with pytest.raises(ProviderError) as info:
        providers.create("tts", config).synthesize("Hello")
    assert not info.value.retryable
    assert len(emulators["tts"].requests) == 1


def test_openai_tts_dropped_connection_is_unavailable(emulators, config):
    emulators["tts"].queue(Drop(), Drop())
    with pytest.raises(ProviderUnavailable):
        providers.create("tts", config).synthesize("Hello")


def test_missing_api_key_names_the_setting(emulators, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    config = config_for(emulators, tmp_path, extra="")
    config.sections["openai"]["api_key"] = ""
    config.sections["tts"]["provider"] = "openai"  # "auto" would fall back to a local voice
    with pytest.raises(ProviderAuthError, match=r"\[openai_tts\] api_key, \[openai\] api_key or OPENAI_API_KEY"):
        providers.create("tts", config)


def test_unknown_provider_name_is_a_config_error(emulators, tmp_path):
    config = config_for(emulators, tmp_path)
    config.sections["tts"]["provider"] = "nonesuch"
    with pytest.raises(ConfigError, match="choose auto or one of: openai_tts, openai_realtime, google_tts, piper, espeak"):
        providers.create("tts", config)


def openai_tts(config):
    return providers.create_named("tts", "openai_tts", config)


def test_openai_tts_streams_the_first_audio_before_the_rest_is_made(emulators, config):
    emulators["tts"].speech_chunk_delay = 0.1    # 100 ms of audio per 100 ms: made in real time
    started = time.monotonic()
    stream = openai_tts(config).synthesize_stream("Hello there.")
    first = next(stream)
    first_at = time.monotonic() - started
    rest = list(stream)
    took = time.monotonic() - started
    assert first.encoding == "s16le" and first.sample_rate == 24000 and len(first.data) % 2 == 0
    assert first_at < 0.5 < 1.3 < took, (first_at, took)
    assert len(first.data) + sum(len(c.data) for c in rest) == 2 * 24000 * 1.5
    assert emulators["tts"].requests[-1].json()["response_format"] == "pcm"


def test_openai_tts_stream_failing_before_its_first_audio_raises_for_the_fallback(emulators, config):
    emulators["tts"].queue(Fail(500), Fail(500))
    with pytest.raises(ProviderError):
        next(openai_tts(config).synthesize_stream("Hello"))
    assert len(emulators["tts"].requests) == 2      # the request and its one retry


def test_openai_tts_stream_cut_midway_ends_with_an_error_and_closing_it_early_releases_it(emulators, config):
    from harness.emulators import Cut

    emulators["tts"].queue(Cut())
    stream = openai_tts(config).synthesize_stream("Hello")
    assert next(stream).data
    with pytest.raises(ProviderError):
        list(stream)
    emulators["tts"].speech_chunk_delay = 0.2
    stream = openai_tts(config).synthesize_stream("Hello again")
    next(stream)
    started = time.monotonic()
    stream.close()                                   # the caller interrupted: no waiting for the rest
    assert time.monotonic() - started < 0.5


def test_streamed_speech_is_resampled_without_seams(emulators, config):
    """A 24 kHz tone streamed in 100 ms chunks and made into 8 kHz PCM by one resampler equals the
    whole tone resampled at once (no click at the chunk boundaries)."""
    from voiceassist.audio.conversion import SpeechStream, speech_to_pcm

    chunks = list(openai_tts(config).synthesize_stream("Hello there."))
    stream = SpeechStream(8000)
    streamed = b"".join(stream.feed(c) for c in chunks) + stream.finish()
    whole = speech_to_pcm(type(chunks[0])(b"".join(c.data for c in chunks), "s16le", 24000), 8000)
    a, b = np.frombuffer(streamed, "<i2").astype(float), np.frombuffer(whole, "<i2").astype(float)
    assert len(a) == len(b)
    # Resampling each chunk alone differs from the whole by ~3000 at every boundary; one stream by 0.
    assert np.max(np.abs(a[200:-200] - b[200:-200])) < 50
