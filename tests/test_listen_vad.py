"""The EAGI end-of-question detector (`voiceassist agi listen`): WebRTC VAD on real speech."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import pytest

from harness.fake_asterisk import agi_env, converse
from voiceassist.asterisk.listen import FRAME_BYTES, Endpointer, EndpointSettings, webrtc_detector

FRAME_S = 0.02
AGI = [sys.executable, "-m", "voiceassist", "agi"]


def spoken(tmp_path: Path, *parts: str | float) -> bytes:
    """8 kHz 16-bit speech (espeak-ng) with silences (floats, seconds) between the parts."""
    pcm = b""
    for index, part in enumerate(parts):
        if isinstance(part, float):
            pcm += b"\0\0" * int(part * 8000)
            continue
        raw, resampled = tmp_path / f"p{index}.wav", tmp_path / f"p{index}.8k.raw"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), part], check=True)
        # Trimmed: espeak's own leading/trailing silence would lengthen the pauses we ask for.
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed", "-t", "raw",
                        str(resampled), "silence", "1", "0.02", "1%", "reverse", "silence", "1", "0.02", "1%",
                        "reverse"], check=True)
        pcm += resampled.read_bytes()
    return pcm[: len(pcm) // FRAME_BYTES * FRAME_BYTES]


def run_endpointer(pcm: bytes, settings: EndpointSettings, trailing_frames: bool = True) -> tuple[str, float]:
    """Feed frames at their real times; return (verdict, seconds from the start at the verdict)."""
    endpointer = Endpointer(webrtc_detector(), settings, 0.0)
    now = 0.0
    for start in range(0, len(pcm), FRAME_BYTES):
        now += FRAME_S
        endpointer.feed(pcm[start:start + FRAME_BYTES], now)
        verdict = endpointer.verdict(now)
        if verdict:
            return verdict, now
    # After the audio: silence frames (a phone) or no frames at all (a Local channel); the clock decides.
    while True:
        now += FRAME_S
        if trailing_frames:
            endpointer.feed(b"\0" * FRAME_BYTES, now)
        verdict = endpointer.verdict(now)
        if verdict:
            return verdict, now


@pytest.fixture(scope="module")
def paused_question(tmp_path_factory) -> bytes:
    return spoken(tmp_path_factory.mktemp("speech"), 0.5, "I need a plumber", 0.45, "for my kitchen sink", 0.3,
                  "as soon as possible")


def test_natural_pauses_do_not_end_the_question(paused_question):
    speech_end = len(paused_question) / 16000
    verdict, at = run_endpointer(paused_question, EndpointSettings(end_ms=700))
    assert verdict == "NOISE"
    # Ends after the last word (not in the 450 ms pause): end_ms plus the detector's short hangover.
    assert speech_end + 0.7 <= at < speech_end + 1.1, (at, speech_end)


@pytest.mark.parametrize("trailing_frames", [True, False], ids=["silence frames", "no frames"])
def test_end_is_found_by_the_clock_with_or_without_frames(paused_question, trailing_frames):
    verdict, at = run_endpointer(paused_question + b"\0" * 3200, EndpointSettings(end_ms=700), trailing_frames)
    assert verdict == "NOISE" and at < len(paused_question) / 16000 + 0.9


def test_a_silent_caller_times_out_after_the_grace_period():
    verdict, at = run_endpointer(b"\0" * FRAME_BYTES * 50, EndpointSettings(grace_s=2.0))
    assert verdict == "TIMEOUT" and at == pytest.approx(2.0, abs=0.05)


def test_noise_without_voice_does_not_start_a_question():
    import numpy as np

    hiss = (np.random.default_rng(3).normal(0, 300, 8000 * 3)).astype("<i2").tobytes()
    verdict, _ = run_endpointer(hiss, EndpointSettings(grace_s=2.5))
    assert verdict == "TIMEOUT"


def test_a_long_question_is_cut_at_the_maximum(tmp_path):
    pcm = spoken(tmp_path, "one two three four five six seven eight nine ten eleven twelve")
    verdict, at = run_endpointer(pcm, EndpointSettings(max_s=1.5))
    assert verdict == "NOISE" and at == pytest.approx(1.5, abs=0.05)


def test_eagi_listen_records_the_question_and_tells_the_dialplan(tmp_path, paused_question):
    """`voiceassist agi listen` as Asterisk runs it: audio on fd 3 in real time, then the pipe stays
    open and silent (a Local channel); the WAV holds the whole question."""
    config = tmp_path / "voiceassist.conf"
    config.write_text(f"[general]\nanswer_dir = {tmp_path}/answers\n")
    target = tmp_path / "answers" / "1700000000.1" / "question-1.wav"  # the call's own directory
    read_end, write_end = os.pipe()

    def feed() -> None:
        for start in range(0, len(paused_question), FRAME_BYTES * 5):
            os.write(write_end, paused_question[start:start + FRAME_BYTES * 5])
            time.sleep(FRAME_S * 5)

    feeder = threading.Thread(target=feed)
    feeder.start()
    started = time.monotonic()
    env = agi_env(["listen", str(target), "8", "700", "60"], enhanced=True)
    code, commands, stderr = converse([*AGI[:3], "--config", str(config), "agi"], env, audio_fd=read_end)
    elapsed = time.monotonic() - started
    feeder.join()
    os.close(write_end)
    os.close(read_end)
    assert code == 0, stderr
    assert commands == ['SET VARIABLE "VA_HEARD" "NOISE"', 'SET VARIABLE "VA_SILENCE_WAITED" "700"'], stderr
    speech_s = len(paused_question) / 16000
    assert speech_s + 0.6 < elapsed < speech_s + 2.0
    with wave.open(str(target)) as wav:
        assert wav.getframerate() == 8000 and abs(wav.getnframes() / 8000 - speech_s) < 0.1
    assert "Traceback" not in stderr


def test_eagi_listen_without_the_audio_pipe_says_failed(tmp_path):
    """Run as plain AGI by mistake: no audio fd; the dialplan falls back to WaitForSilence."""
    env = agi_env(["listen", str(tmp_path / "q.wav")], enhanced=False)
    code, commands, stderr = converse(AGI, env)
    assert code == 0 and commands == ['SET VARIABLE "VA_HEARD" "FAILED"'], stderr


def test_eagi_listener_with_answer_prepares_while_listening_and_answers_in_the_same_process(
        emulators, tmp_path, paused_question):
    """Process AGI's flow: the listener loads config, SDKs and clients while the caller speaks,
    then runs the turn itself, so no second Python starts after the question."""
    from harness.helpers import config_for

    config = config_for(emulators, tmp_path, extra="[general]\nplayback = pipelined\n")
    target = tmp_path / "spool/voiceassist/1700000000.1/question-1.wav"  # the call's own directory
    read_end, write_end = os.pipe()
    # The whole question as fast as the listener reads it (more than the pipe holds), then no frames.
    feeder = threading.Thread(target=os.write, args=(write_end, paused_question))
    feeder.start()
    started = time.monotonic()
    env = agi_env(["listen", str(target), "8", "700", "60", "answer", "1", str(int(time.time())), "8008",
                   "1700000000.1"], enhanced=True)
    code, commands, stderr = converse([sys.executable, "-m", "voiceassist", "--config", str(config.path), "agi"],
                                      env, audio_fd=read_end)
    elapsed = time.monotonic() - started
    feeder.join()
    os.close(write_end)
    os.close(read_end)
    assert code == 0, stderr
    assert commands[:3] == ['SET VARIABLE "VA_HEARD" "NOISE"', 'SET VARIABLE "VA_SILENCE_WAITED" "700"',
                            'SET VARIABLE "VA_STATE" "thinking"'], commands
    assert any(c.startswith("STREAM FILE") for c in commands)
    assert 'SET VARIABLE "VOICEASSIST_STATUS" "ok"' in commands
    assert commands[-1] == 'SET VARIABLE "VA_DONE" "1"'
    assert elapsed < 10, elapsed
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        status, speech_to_audio = db.execute("SELECT status, speech_to_audio_ms FROM voiceassist_turns").fetchone()
    assert status == "ok" and 700 <= speech_to_audio < 5000


def test_a_stalled_listener_reads_the_backlog_before_judging_the_silence(tmp_path):
    """The listener is held up for 0.9 s (a busy CPU) early in a 500 ms pause while the caller goes
    on talking: the newest frames waiting in the pipe are voice, so the question is not over."""
    from voiceassist.asterisk.listen import listen

    voiced, silent = b"\x10\x27" * 160, b"\0\0" * 160
    audio = voiced * 20 + silent * 25 + voiced * 30  # 400 ms talk, 500 ms pause, 600 ms talk

    class Detector:
        def is_speech(self, frame: bytes) -> bool:
            return frame == voiced

    polls = []

    def stalls_once() -> bool:  # called once per pass of the listening loop
        polls.append(1)
        if len(polls) == 3:
            time.sleep(0.9)
        return False

    read_end, write_end = os.pipe()
    os.write(write_end, audio)
    outcome = listen(read_end, tmp_path / "q.wav", Detector(), EndpointSettings(end_ms=700), stalls_once)
    os.close(write_end)
    os.close(read_end)
    assert outcome.heard == "NOISE" and outcome.speech_s == pytest.approx(1.5, abs=0.01), outcome
