"""Streaming speech-to-text: the real google-cloud-speech SDK over gRPC StreamingRecognize (v1 and
v2) against the gRPC emulator, fed a spoken question (espeak-ng, after a marker tone) in 20 ms
chunks in real time, as a caller's audio arrives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from harness.emulators import Abort, Hang, Sever
from harness.helpers import config_for
from harness.speech import speech_end_seconds, spoken_question
from voiceassist import providers
from voiceassist.errors import (
    AGIHangup,
    AudioError,
    ProviderAuthError,
    ProviderBadResponse,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
)
from voiceassist.providers.base import StreamingSpeechToText
from voiceassist.types import TranscriptEvent

MARKER_HZ = 1250.0
TRANSCRIPT = "Can a plumber come on Saturday morning?"
CHUNK_SECONDS = 0.020
TRAILING_SILENCE = 1.5      # the line stays open after the question, as on a call
FINAL_DELAY = 0.150         # the emulator's (and the benchmark's) speech end -> final result
TOLERANCE = 0.060


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> dict[int, bytes]:
    directory = tmp_path_factory.mktemp("questions")
    return {rate: spoken_question(directory, TRANSCRIPT, MARKER_HZ, rate) for rate in (8000, 16000)}


class RealTimeCaller:
    """The caller's side: ``pcm`` then silence, in 20 ms chunks, each handed over when it has been
    "spoken" (on a fixed schedule, so lateness does not add up). Records when each was taken."""

    def __init__(self, pcm: bytes, rate: int, *, silence: float = TRAILING_SILENCE,
                 fail_after: float | None = None) -> None:
        self.rate = rate
        self.audio = pcm + b"\0\0" * int(silence * rate)
        self.chunk = int(CHUNK_SECONDS * rate) * 2
        self.fail_after = fail_after
        self.taken: list[float] = []          # monotonic time each chunk was handed over
        self.started = 0.0

    @property
    def seconds(self) -> float:
        return len(self.audio) / 2 / self.rate

    def __iter__(self) -> Iterator[bytes]:
        self.started = time.monotonic()
        for index, start in enumerate(range(0, len(self.audio), self.chunk)):
            due = self.started + (index + 1) * CHUNK_SECONDS
            time.sleep(max(0.0, due - time.monotonic()))
            if self.fail_after is not None and (index + 1) * CHUNK_SECONDS > self.fail_after:
                raise AGIHangup("the caller hung up")
            self.taken.append(time.monotonic())
            yield self.audio[start:start + self.chunk]

    def taken_at(self, seconds: float) -> float:
        """When the chunk holding the audio up to ``seconds`` was handed over."""
        return self.taken[int(round(seconds / CHUNK_SECONDS)) - 1]


def streaming_stt(emulators, speech_grpc, tmp_path, extra: str = "") -> StreamingSpeechToText:
    speech_grpc.transcripts[MARKER_HZ] = TRANSCRIPT
    config = config_for(emulators, tmp_path, extra=f"[google_speech]\nendpoint = {speech_grpc.endpoint}\n{extra}")
    stt = providers.create_named("stt", "google_speech", config)
    assert isinstance(stt, StreamingSpeechToText)
    return stt


def collect(events: Iterator[TranscriptEvent]) -> list[tuple[float, TranscriptEvent]]:
    return [(time.monotonic(), event) for event in events]


VERSIONS = {"v1": "", "v2": "api_version = v2\nproject = test-proj\n"}


# -- the happy path, timed -------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_interim_words_then_the_registered_transcript_150ms_after_the_speech_ends(
        version, emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path, VERSIONS[version])
    caller = RealTimeCaller(questions[8000], 8000)
    received = collect(stt.stream(caller, 8000))
    ended_at = time.monotonic()

    interim = [e for _, e in received if not e.is_final and not e.end_of_utterance]
    finals = [(at, e) for at, e in received if e.is_final]
    assert len(interim) >= 3, received
    words = TRANSCRIPT.split()
    assert [e.text for e in interim] == [" ".join(words[:len(e.text.split())]) for e in interim]  # word by word
    assert len(interim[-1].text.split()) > len(interim[0].text.split())
    assert all(e.stability is not None and 0 < e.stability < 1 for e in interim)
    assert len(finals) == 1
    final_at, final = finals[0]
    assert final.text == TRANSCRIPT and final.confidence == pytest.approx(0.92)
    assert received.index((final_at, final)) == len(received) - 1  # the interim words came first

    speech_end = speech_end_seconds(questions[8000], 8000)
    latency = final_at - caller.taken_at(speech_end)
    print(f"\n{version}: final result {latency * 1000:.0f} ms after the end of speech")
    assert FINAL_DELAY - TOLERANCE <= latency <= FINAL_DELAY + TOLERANCE
    assert abs(final.offset_ms - speech_end * 1000) <= 20

    # the end of the utterance was signalled, and the stream ended then, not with the audio
    assert [e.end_of_utterance for _, e in received].count(True) == 1
    stream = speech_grpc.streams[-1]
    assert stream.half_closed_at is not None and stream.ended == "half-closed"
    assert stream.half_closed_at - caller.taken_at(speech_end) < FINAL_DELAY + TOLERANCE + 0.05
    assert ended_at - caller.started < caller.seconds - 1.0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_server_sees_linear16_telephony_interim_results_and_the_audio_in_real_time(
        version, emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path, VERSIONS[version])
    caller = RealTimeCaller(questions[8000], 8000)
    collect(stt.stream(caller, 8000))
    stream = speech_grpc.streams[-1]
    config = stream.config
    if version == "v1":
        recognition = config["config"]
        assert (recognition["encoding"], recognition["sample_rate_hertz"]) == ("LINEAR16", 8000)
        assert (recognition["model"], recognition["language_code"]) == ("telephony", "en-US")
        assert recognition["audio_channel_count"] == 1
        assert config["interim_results"] is True
        # telephony does not allow single_utterance: the end of speech comes as a voice activity event
        assert config["single_utterance"] is False and config["enable_voice_activity_events"] is True
        assert stream.events == ["SPEECH_ACTIVITY_BEGIN", "SPEECH_ACTIVITY_END"]
    else:
        assert stream.recognizer == "projects/test-proj/locations/global/recognizers/_"
        decoding = config["config"]["explicit_decoding_config"]
        assert (decoding["encoding"], decoding["sample_rate_hertz"], decoding["audio_channel_count"]) == ("LINEAR16", 8000, 1)
        assert (config["config"]["model"], config["config"]["language_codes"]) == ("telephony", ["en-US"])
        assert config["streaming_features"]["interim_results"] is True
        assert config["streaming_features"]["enable_voice_activity_events"] is True
        assert stream.events == ["SPEECH_ACTIVITY_BEGIN", "SPEECH_ACTIVITY_END"]
    # what the caller said until the end of the utterance, in its 20 ms chunks, as they came (a
    # chunk handed over after the end of the utterance may be dropped)
    assert caller.audio.startswith(stream.audio)
    assert len(caller.taken) - 1 <= len(stream.chunks) <= len(caller.taken)
    assert {len(chunk) for _, chunk in stream.chunks} == {caller.chunk}
    arrivals = [at for at, _ in stream.chunks]
    assert arrivals[-1] - arrivals[0] == pytest.approx(len(arrivals) * CHUNK_SECONDS - CHUNK_SECONDS, abs=0.05)
    delays = [arrived - taken for arrived, taken in zip(arrivals, caller.taken)]
    assert max(delays) < 0.05  # each chunk was sent on at once, not gathered


def test_16khz_audio_streams_at_16khz(emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    caller = RealTimeCaller(questions[16000], 16000)
    received = collect(stt.stream(caller, 16000))
    finals = [(at, e) for at, e in received if e.is_final]
    assert [e.text for _, e in finals] == [TRANSCRIPT]
    assert speech_grpc.streams[-1].config["config"]["sample_rate_hertz"] == 16000
    assert {len(chunk) for _, chunk in speech_grpc.streams[-1].chunks} == {640}  # 20 ms at 16 kHz
    latency = finals[0][0] - caller.taken_at(speech_end_seconds(questions[16000], 16000))
    print(f"\n16 kHz: final result {latency * 1000:.0f} ms after the end of speech")
    assert FINAL_DELAY - TOLERANCE <= latency <= FINAL_DELAY + TOLERANCE


def test_v1_single_utterance_ends_the_stream_with_a_model_that_supports_it(emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path, "model = command_and_search\n")
    caller = RealTimeCaller(questions[8000], 8000)
    received = [e for _, e in collect(stt.stream(caller, 8000))]
    stream = speech_grpc.streams[-1]
    assert stream.config["single_utterance"] is True and stream.config["enable_voice_activity_events"] is False
    assert stream.events == ["END_OF_SINGLE_UTTERANCE"]
    assert received[-2].end_of_utterance and received[-1].is_final and received[-1].text == TRANSCRIPT
    assert stream.ended == "closed"  # the server closed it after the final result


def test_streaming_uses_grpc_when_the_batch_transport_is_rest(emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path, "transport = rest\n")
    assert stt.settings.transport == "rest"
    caller = RealTimeCaller(questions[8000][:8000 * 2], 8000, silence=0.5)
    assert [e.text for _, e in collect(stt.stream(caller, 8000)) if e.is_final] == [TRANSCRIPT]
    assert len(speech_grpc.streams) == 1 and emulators["speech"].requests == []


def test_chunks_over_the_per_message_limit_are_split(emulators, speech_grpc, tmp_path, questions):
    """v2 takes at most 15 KB of audio a message; a caller may hand over a whole second at once."""
    stt = streaming_stt(emulators, speech_grpc, tmp_path, VERSIONS["v2"])
    pcm = questions[16000] + b"\0\0" * 16000
    one_second = 32000
    chunks = [pcm[i:i + one_second] for i in range(0, len(pcm), one_second)]
    finals = [e.text for e in stt.stream(iter(chunks), 16000) if e.is_final]
    assert finals == [TRANSCRIPT]
    stream = speech_grpc.streams[-1]
    assert max(len(chunk) for _, chunk in stream.chunks) <= 15 * 1024
    assert pcm.startswith(stream.audio) and len(stream.audio) >= len(questions[16000])


def test_silence_gives_no_events_and_ends_with_the_audio(emulators, speech_grpc, tmp_path):
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    caller = RealTimeCaller(b"", 8000, silence=0.6)
    assert collect(stt.stream(caller, 8000)) == []
    assert speech_grpc.streams[-1].ended == "half-closed"
    assert len(speech_grpc.streams[-1].audio) == len(caller.audio)


# -- failures --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "error"), [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ProviderRateLimited),
    (grpc.StatusCode.UNAVAILABLE, ProviderUnavailable),
    (grpc.StatusCode.UNAUTHENTICATED, ProviderAuthError),
    (grpc.StatusCode.PERMISSION_DENIED, ProviderAuthError),
])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_an_error_at_the_start_is_the_matching_provider_error(version, code, error, emulators, speech_grpc,
                                                             tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path, VERSIONS[version])
    speech_grpc.queue(Abort(code, "emulated refusal"))
    started = time.monotonic()
    with pytest.raises(error) as info:
        collect(stt.stream(RealTimeCaller(questions[8000], 8000), 8000))
    assert time.monotonic() - started < 1.0
    message = str(info.value)
    assert message.startswith("google_speech: ") and "emulated refusal" in message and "\n" not in message
    if error is ProviderAuthError:
        assert "credentials_file" in message  # names the setting to fix
    assert len(speech_grpc.streams) == 1  # not retried: the caller's audio cannot be replayed


@pytest.mark.parametrize(("failure", "error"), [
    (Abort(grpc.StatusCode.INTERNAL, "emulated crash", after=1.2), ProviderUnavailable),
    (Abort(grpc.StatusCode.UNAVAILABLE, "emulated overload", after=1.2), ProviderUnavailable),
    (Sever(after=1.2), ProviderUnavailable),
    (Hang(0.8), ProviderBadResponse),       # closes the stream, unanswered, while the caller talks
], ids=["internal", "unavailable", "connection-cut", "closed-early"])
def test_a_failure_mid_stream_ends_the_iterator_with_an_error(failure, error, emulators, speech_grpc, tmp_path,
                                                              questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    speech_grpc.queue(failure)
    caller = RealTimeCaller(questions[8000], 8000)
    events: list[TranscriptEvent] = []
    started = time.monotonic()
    with pytest.raises(error) as info:
        for event in stt.stream(caller, 8000):
            events.append(event)
    assert "\n" not in str(info.value)
    assert time.monotonic() - started < 1.6  # at the failure, not at the end of the audio
    if isinstance(failure, (Abort, Sever)):
        assert events and not any(e.is_final for e in events)  # interim words came, then the error


def test_an_error_reported_in_a_v1_response_ends_the_iterator_with_that_error(emulators, speech_grpc, tmp_path,
                                                                            questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    speech_grpc.queue(Abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "emulated quota", after=1.0, in_response=True))
    with pytest.raises(ProviderRateLimited, match="emulated quota"):
        collect(stt.stream(RealTimeCaller(questions[8000], 8000), 8000))
    assert speech_grpc.streams[-1].ended == "error in response RESOURCE_EXHAUSTED"


def test_the_streaming_client_uses_the_batch_endpoint(emulators, speech_grpc, tmp_path):
    """REST cannot stream: the gRPC client goes to the batch client's host (an https://
    endpoint, host:port, the default, a v2 region's host); nothing connects before a stream."""
    def streaming_host(extra: str) -> str:
        config = config_for(emulators, tmp_path, extra=f"[google_speech]\ntransport = rest\n{extra}")
        return providers.create_named("stt", "google_speech", config)._grpc_client().transport.host

    assert streaming_host("endpoint = https://speech.example.test\n") == "speech.example.test:443"
    assert streaming_host("endpoint = speech.example.test:8443\n") == "speech.example.test:8443"
    assert streaming_host("endpoint =\n") == "speech.googleapis.com:443"
    assert streaming_host("endpoint =\napi_version = v2\nproject = p\nlocation = europe-west4\n") == (
        "europe-west4-speech.googleapis.com:443")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_recogniser_that_never_answers_ends_with_provider_timeout_within_the_limit(
        version, emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path, VERSIONS[version] + "final_result_timeout = 0.5\n")
    speech_grpc.queue(Hang(60))
    caller = RealTimeCaller(questions[8000][:8000 * 2], 8000, silence=0.2)
    with pytest.raises(ProviderTimeout, match="final_result_timeout"):
        collect(stt.stream(caller, 8000))
    waited = time.monotonic() - caller.taken[-1]
    assert 0.45 <= waited <= 0.5 + 0.3
    deadline = time.monotonic() + 2
    while speech_grpc.streams[-1].ended != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert speech_grpc.streams[-1].ended == "cancelled"  # the call was cancelled, not left hanging


def test_the_audio_source_failing_ends_the_stream_with_its_own_error(emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    caller = RealTimeCaller(questions[8000], 8000, fail_after=1.0)
    started = time.monotonic()
    with pytest.raises(AGIHangup, match="the caller hung up"):
        collect(stt.stream(caller, 8000))
    assert time.monotonic() - started < 1.4
    deadline = time.monotonic() + 2
    while speech_grpc.streams[-1].ended != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert speech_grpc.streams[-1].ended == "cancelled"


def test_a_consumer_that_stops_listening_cancels_the_stream(emulators, speech_grpc, tmp_path, questions):
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    caller = RealTimeCaller(questions[8000], 8000)
    events = stt.stream(caller, 8000)
    first = next(iter(events))
    assert not first.is_final
    events.close()  # e.g. the caller barged in and the engine moved on
    deadline = time.monotonic() + 2
    while speech_grpc.streams[-1].ended != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert speech_grpc.streams[-1].ended == "cancelled"
    assert speech_grpc.streams[-1].audio_seconds < caller.seconds - 1.0


@pytest.mark.parametrize("rate", [0, 4000, 96000])
def test_an_unsupported_sample_rate_is_a_one_line_audio_error(rate, emulators, speech_grpc, tmp_path):
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    with pytest.raises(AudioError, match=rf"^google_speech: cannot stream audio at {rate} Hz \(8000 to 48000 Hz\)$"):
        stt.stream(iter([b"\0\0" * 160]), rate)
    assert speech_grpc.streams == []


def test_a_threadsafe_client_serves_two_streams_at_once(emulators, speech_grpc, tmp_path, questions):
    """A FastAGI worker shares one provider between calls: two streams at once stay apart."""
    stt = streaming_stt(emulators, speech_grpc, tmp_path)
    speech_grpc.transcripts[1900.0] = "Do you fix boilers?"
    other = spoken_question(tmp_path / "other", "Do you fix boilers?", 1900.0, 8000)
    results: dict[str, list[str]] = {}

    def run(name: str, pcm: bytes) -> None:
        results[name] = [e.text for e in stt.stream(RealTimeCaller(pcm, 8000, silence=0.5), 8000) if e.is_final]

    threads = [threading.Thread(target=run, args=("first", questions[8000])),
               threading.Thread(target=run, args=("second", other))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == {"first": [TRANSCRIPT], "second": ["Do you fix boilers?"]}
    assert len(speech_grpc.streams) == 2
