"""Streaming text-to-speech with Google: the real google-cloud-texttospeech SDK over gRPC
StreamingSynthesize against the gRPC emulator (harness/emulators/google_tts_grpc.py), which
shares its port with the REST emulator as the real endpoint does. The answer is a tone whose
frequency names its text; the emulator sends it in 100 ms chunks, the first after
``first_chunk_delay`` and the others ``chunk_interval`` apart."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from harness.emulators.google_tts_grpc import Abort
from harness.emulators.relay import TcpRelay
from harness.helpers import config_for, voiceassist_log
from harness.phone_leg import PhoneLeg
from harness.speech import speech_end_seconds, spoken_question, tone_spans
from tests import test_realtime_conversation as realtime
from voiceassist import providers
from voiceassist.call.assistant import Assistant
from voiceassist.errors import (
    ProviderAuthError,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from voiceassist.providers.base import StreamingTextToSpeech
from voiceassist.providers.chain import ProviderChain

VOICE = "en-US-Chirp3-HD-Aoede"
TEXT = "Our plumbers work on Saturday mornings."


def google_tts(emulators, google_tts_grpc, tmp_path, extra: str = "") -> StreamingTextToSpeech:
    config = config_for(emulators, tmp_path, extra=f"[google_tts]\nendpoint = {google_tts_grpc.endpoint}\n"
                                                   f"voice = {VOICE}\n{extra}")
    tts = providers.create_named("tts", "google_tts", config)
    assert isinstance(tts, StreamingTextToSpeech)
    return tts


def client_threads(before: set[threading.Thread]) -> list[str]:
    """Threads started since ``before`` that are not the emulators' (their servers' workers and
    connections)."""
    emulator = ("ThreadPoolExecutor", "process_request_thread", TcpRelay.THREAD_PREFIX)
    return [t.name for t in set(threading.enumerate()) - before
            if t.is_alive() and not any(part in t.name for part in emulator)]


def wait_for(condition, seconds: float = 2.0) -> bool:
    until = time.monotonic() + seconds
    while not condition() and time.monotonic() < until:
        time.sleep(0.01)
    return bool(condition())


# -- the happy path, timed -------------------------------------------------------------------------
def test_the_first_audio_comes_before_the_whole_answer_is_synthesized(emulators, google_tts_grpc, tmp_path):
    google_tts_grpc.first_chunk_delay = 0.3
    google_tts_grpc.chunk_interval = 0.1
    tts = google_tts(emulators, google_tts_grpc, tmp_path)
    started = time.monotonic()
    arrivals = [(time.monotonic(), chunk) for chunk in tts.synthesize_stream(TEXT)]
    stream = google_tts_grpc.streams[-1]
    first_at = arrivals[0][0] - started
    whole_at = arrivals[-1][0] - started
    print(f"first audio after {first_at * 1000:.0f} ms, the whole answer after {whole_at * 1000:.0f} ms")
    assert 0.3 <= first_at < 0.3 + 0.2          # the emulator's delay, plus connecting
    assert whole_at >= 0.3 + 14 * 0.1           # fifteen chunks, 100 ms apart
    assert arrivals[0][0] - stream.chunks[0][0] < 0.05  # each chunk is passed on as it arrives
    assert len(arrivals) == len(stream.chunks) == 15
    assert stream.ended == "completed"


def test_the_pieces_joined_are_the_tone_the_emulator_streamed(emulators, google_tts_grpc, tmp_path):
    google_tts_grpc.first_chunk_delay = 0.0
    google_tts_grpc.chunk_interval = 0.0
    tts = google_tts(emulators, google_tts_grpc, tmp_path)
    chunks = list(tts.synthesize_stream(f"  {TEXT}\n"))
    assert {(c.encoding, c.sample_rate) for c in chunks} == {("s16le", 16000)}
    stream = google_tts_grpc.streams[-1]
    assert b"".join(c.data for c in chunks) == stream.audio == google_tts_grpc.audio_for(TEXT, "PCM", 16000)
    assert stream.texts == [TEXT]
    assert stream.config["voice"]["name"] == VOICE and stream.config["voice"]["language_code"] == "en-US"
    assert stream.config["streaming_audio_config"] == {"audio_encoding": "PCM", "sample_rate_hertz": 16000,
                                                       "speaking_rate": 1.0}
    assert emulators["google_tts"].requests == []  # REST was not used


def test_a_text_over_the_input_limit_goes_as_several_inputs_of_one_call(emulators, google_tts_grpc, tmp_path):
    google_tts_grpc.first_chunk_delay = 0.0
    google_tts_grpc.chunk_interval = 0.0
    google_tts_grpc.seconds = 0.2
    tts = google_tts(emulators, google_tts_grpc, tmp_path)
    sentences = [f"This is sentence number {n} of a long answer about opening hours." for n in range(40)]
    chunks = list(tts.synthesize_stream(" ".join(sentences)))
    (stream,) = google_tts_grpc.streams
    assert len(stream.texts) >= 2 and all(len(text) <= 1500 for text in stream.texts)
    assert " ".join(stream.texts) == " ".join(sentences)
    assert b"".join(c.data for c in chunks) == b"".join(google_tts_grpc.audio_for(t, "PCM", 16000) for t in stream.texts)


def test_nothing_to_say_is_a_bad_response(emulators, google_tts_grpc, tmp_path):
    with pytest.raises(ProviderBadResponse, match="nothing to say"):
        google_tts(emulators, google_tts_grpc, tmp_path).synthesize_stream("  ")
    assert google_tts_grpc.streams == []


# -- voices that cannot stream ---------------------------------------------------------------------
def test_a_voice_that_cannot_stream_falls_back_to_one_whole_synthesis(emulators, google_tts_grpc, tmp_path):
    tts = google_tts(emulators, google_tts_grpc, tmp_path, "voice = en-US-Standard-C\n")
    with voiceassist_log() as log:
        chunks = list(tts.synthesize_stream(TEXT))
        again = list(tts.synthesize_stream("And on Sundays."))
    (chunk,) = chunks
    whole = tts.synthesize(TEXT)  # what text:synthesize says for the same text
    assert (chunk.encoding, chunk.sample_rate, chunk.data) == (whole.encoding, whole.sample_rate, whole.data)
    assert len(again) == 1
    # One refused stream; from then on the voice is synthesised whole (one REST request a sentence).
    assert [s.ended for s in google_tts_grpc.streams] == ["cannot stream"]
    rest = [r for r in emulators["google_tts"].requests if r.path.startswith("/v1/text:synthesize")]
    assert [r.json()["input"]["text"] for r in rest] == [TEXT, "And on Sundays.", TEXT]
    warnings = [line for line in log().splitlines() if "cannot stream" in line]
    assert len(warnings) == 1, log()
    assert "en-US-Standard-C" in warnings[0] and "Chirp 3 HD" in warnings[0]


# -- failures --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "error", "streams"), [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ProviderRateLimited, 2),   # retried once, as configured
    (grpc.StatusCode.UNAVAILABLE, ProviderUnavailable, 2),
    (grpc.StatusCode.PERMISSION_DENIED, ProviderAuthError, 1),
    (grpc.StatusCode.UNAUTHENTICATED, ProviderAuthError, 1),
])
def test_an_error_before_the_first_audio_is_the_matching_provider_error(code, error, streams, emulators,
                                                                       google_tts_grpc, tmp_path):
    tts = google_tts(emulators, google_tts_grpc, tmp_path)
    google_tts_grpc.queue(Abort(code, "emulated refusal"), Abort(code, "emulated refusal"))
    stream = tts.synthesize_stream(TEXT)
    with pytest.raises(error) as info:
        next(stream)  # raises before any audio: a fallback voice can still answer
    message = str(info.value)
    assert message.startswith("google_tts: ") and "emulated refusal" in message and "\n" not in message
    if error is ProviderAuthError:
        assert "credentials_file" in message  # names the setting to fix
    assert len(google_tts_grpc.streams) == streams
    assert emulators["google_tts"].requests == []  # an error is not a reason to synthesise whole


def test_a_failure_mid_stream_ends_the_iterator_with_an_error(emulators, google_tts_grpc, tmp_path):
    google_tts_grpc.first_chunk_delay = 0.0
    tts = google_tts(emulators, google_tts_grpc, tmp_path)
    google_tts_grpc.queue(Abort(grpc.StatusCode.INTERNAL, "emulated crash", after=3))
    received = []
    with pytest.raises(ProviderUnavailable, match="emulated crash"):
        for chunk in tts.synthesize_stream(TEXT):
            received.append(chunk)
    assert len(received) == 3 and len(google_tts_grpc.streams) == 1  # not retried once audio went out
    assert google_tts_grpc.streams[-1].ended == "aborted INTERNAL"


def test_no_first_audio_within_the_timeout_is_a_provider_timeout(emulators, google_tts_grpc, tmp_path):
    google_tts_grpc.first_chunk_delay = 5.0
    tts = google_tts(emulators, google_tts_grpc, tmp_path, "timeout = 0.5\nretries = 0\n")
    before = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="no audio within 0.5 s"):
        next(tts.synthesize_stream(TEXT))
    assert 0.45 < time.monotonic() - started < 0.8
    assert wait_for(lambda: google_tts_grpc.streams[-1].ended == "cancelled")
    assert wait_for(lambda: not client_threads(before)), client_threads(before)


# -- closing early ---------------------------------------------------------------------------------
def test_closing_the_stream_mid_answer_cancels_the_call_and_leaves_no_thread(emulators, google_tts_grpc,
                                                                              tmp_path):
    tts = google_tts(emulators, google_tts_grpc, tmp_path)
    list(tts.synthesize_stream("Warm up."))  # the channel and its threads exist before counting
    before = set(threading.enumerate())
    stream = tts.synthesize_stream(TEXT)
    next(stream), next(stream)
    stream.close()  # type: ignore[attr-defined]
    record = google_tts_grpc.streams[-1]
    assert wait_for(lambda: record.ended == "cancelled"), record.ended
    assert len(record.chunks) < record.planned_chunks
    assert list(stream) == []
    assert wait_for(lambda: not client_threads(before)), client_threads(before)


@pytest.mark.parametrize("through", ["provider", "fallback chain"])
def test_closing_from_another_thread_ends_a_read_waiting_for_the_next_chunk(through, emulators, google_tts_grpc,
                                                                             tmp_path):
    """A barge-in: the conversation closes the stream while its worker waits for audio (the
    answer's worker reads it through the provider chain, as the real-time conversation does)."""
    tts = google_tts(emulators, google_tts_grpc, tmp_path, "timeout = 5\n")
    list(tts.synthesize_stream("Warm up."))
    google_tts_grpc.first_chunk_delay = 0.0
    google_tts_grpc.chunk_interval = 2.0
    before = set(threading.enumerate())
    if through == "provider":
        stream = tts.synthesize_stream(TEXT)
    else:
        chain = ProviderChain("tts", ["google_tts"], lambda name: tts)
        stream, _ = chain.stream(lambda provider: provider.synthesize_stream(TEXT))
    received = []
    ended = threading.Event()

    def read() -> None:
        for chunk in stream:
            received.append(chunk)
        ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert wait_for(lambda: len(received) == 1)
    time.sleep(0.1)  # the reader now waits for the second chunk, due in 2 s
    closed_at = time.monotonic()
    stream.close()  # type: ignore[attr-defined]
    assert ended.wait(1.0) and time.monotonic() - closed_at < 0.3  # ends quietly, at once
    reader.join(1.0)
    assert len(received) == 1
    assert wait_for(lambda: google_tts_grpc.streams[-1].ended == "cancelled")
    assert wait_for(lambda: not client_threads(before)), client_threads(before)


def test_the_streaming_client_uses_the_configured_endpoint(emulators, google_tts_grpc, tmp_path):
    """REST cannot stream: the gRPC client goes to the REST client's host (an https:// endpoint,
    host:port, the default); nothing connects before a stream."""
    def streaming_host(endpoint: str) -> str:
        config = config_for(emulators, tmp_path, extra=f"[google_tts]\nendpoint = {endpoint}\n")
        return providers.create_named("tts", "google_tts", config)._grpc_client().transport.host

    assert streaming_host("https://tts.example.test") == "tts.example.test:443"
    assert streaming_host("tts.example.test:8443") == "tts.example.test:8443"
    assert streaming_host("") == "texttospeech.googleapis.com:443"


# -- in a real-time conversation -------------------------------------------------------------------
def test_a_real_time_answer_is_spoken_with_google_tts_streaming(emulators, speech_grpc, google_tts_grpc, tmp_path):
    rate = realtime.RATE
    question = spoken_question(tmp_path, realtime.QUESTION, realtime.MARKER_HZ, rate)
    speech_grpc.transcripts[realtime.MARKER_HZ] = realtime.QUESTION
    config = config_for(emulators, tmp_path / "data", extra=f"""
[stt]
provider = google_speech
[llm]
provider = gemini
[tts]
provider = google_tts
[google_speech]
endpoint = {speech_grpc.endpoint}
[google_tts]
endpoint = {google_tts_grpc.endpoint}
voice = {VOICE}
[live]
still_there_after = 4
goodbye_after = 3
""")
    assistant = Assistant(config)
    assert not assistant.prepare()
    leg = PhoneLeg(rate)
    asked_at = realtime.GREETING_S + 0.5
    leg.say(question, at=asked_at)
    leg.hang_up_at(asked_at + 7.0)
    outcome = realtime.converse(assistant, leg)

    assert outcome.turns == 1
    reply = f"Answer 1: you asked, {realtime.QUESTION}"
    # The simulated line pads each piece it is given to a whole 20 ms frame (a real leg's playout
    # carries the remainder over), so every streamed chunk heard ends in a short gap: the tone's
    # stretches, gaps of up to one frame bridged, make one span, as long as the answer plus those.
    spans = tone_spans(leg.heard_pcm(), rate, realtime.answer_tone(realtime.QUESTION), min_seconds=0.02)
    merged = [list(spans[0])]
    for begin, finish in spans[1:]:
        if begin - merged[-1][1] <= 0.021:
            merged[-1][1] = finish
        else:
            merged.append([begin, finish])
    assert len(merged) == 1, spans
    start, end = merged[0]
    chunks = len(google_tts_grpc.streams[-1].chunks)
    assert google_tts_grpc.seconds - 0.06 < end - start < google_tts_grpc.seconds + chunks * 0.02, spans
    (turn,) = realtime.stored_turns(assistant)
    assert turn["status"] == "ok" and turn["reply"] == reply and turn["tts_provider"] == "google_tts"
    assert turn["played_ms"] == pytest.approx(1500, abs=40)
    assert turn["tts_ms"] == pytest.approx(200, abs=100)  # the sentence's text to its first audio
    (stream,) = google_tts_grpc.streams
    assert stream.texts == [reply] and stream.ended == "completed"
    assert emulators["google_tts"].requests == []
    # After the end silence (500 ms; the answer is prepared meanwhile, held), at most the
    # emulator's first chunk (200 ms) and the first 300 ms of audio gathered (100 ms more) later.
    speech_end = asked_at + speech_end_seconds(question, rate)
    assert 0.48 < start - speech_end < 0.48 + 0.2 + 0.1 + 0.25, (start, speech_end)
