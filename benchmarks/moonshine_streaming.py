"""Moonshine in the real-time conversation: streamed while the caller speaks, or transcribed whole
once they stop, side by side on the same clips.

    .venv/bin/python -m benchmarks.moonshine_streaming [--voices en-us piper-1.0] [--limit N] [--pairs N]

The questions of ``benchmarks/data/paraphrases.tsv``, spoken by each voice through the 8 kHz μ-law
line (``benchmarks.stt_accuracy.make_clips``), one at a time and (``--pairs``, 25) two of them in
one breath 0.6 s apart, are given to one Moonshine provider (created by the registry, as a call
creates it) in two ways:

* **whole**: the clip's recording transcribed once it has ended (what the AGI flow does, and the
  real-time conversation with a recogniser that does not stream);
* **streamed**: the clip fed to :meth:`~voiceassist.providers.moonshine.MoonshineSpeechToText.stream`
  in 20 ms pieces at the pace a caller speaks (a feeder thread sleeps to the clock), as the live
  call's listener feeds it.

Reported, per way: the time from the end of the audio to the last words (end of speech to words:
what the conversation waits for before it can answer), mean, median and p90; for the stream, how
long after the caller starts the first words appear (the console's live words) and the share of
clips whose first sentence was final before the audio ended; word accuracy of each way's words
(``benchmarks.stt_accuracy.word_accuracy``). 50 questions x 2 voices and 25 pairs take about 8
minutes, most of it the real-time pacing.
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.knowledge_match import load_questions
from benchmarks.stt_accuracy import MAX_SECONDS, make_clips, normalise, word_accuracy

PIECE_SECONDS = 0.02


@dataclass
class Streamed:
    text: str
    end_to_words: float      # seconds from the last piece fed to the last final words
    first_words: float       # seconds from the first piece to the first words (interim or final)
    final_before_end: bool   # some words were final before the audio ended


def stream_clip(stt: object, pcm: bytes, rate: int) -> Streamed:
    pieces: queue.Queue[bytes | None] = queue.Queue()
    piece_bytes = int(rate * PIECE_SECONDS) * 2
    started = time.monotonic()
    ended = [0.0]

    def feed() -> None:
        for index, start in enumerate(range(0, len(pcm), piece_bytes)):
            delay = started + index * PIECE_SECONDS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pieces.put(pcm[start:start + piece_bytes])
        ended[0] = time.monotonic()
        pieces.put(None)

    def audio():  # type: ignore[no-untyped-def]
        while (piece := pieces.get()) is not None:
            yield piece

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    finals: list[str] = []
    first = last = None
    final_early = False
    for event in stt.stream(audio(), rate):  # type: ignore[attr-defined]
        now = time.monotonic()
        first = first if first is not None else now
        if event.is_final:
            finals.append(event.text)
            last = now
            final_early = final_early or not ended[0]
    feeder.join()
    done = last if last is not None else time.monotonic()
    return Streamed(" ".join(finals), max(0.0, done - ended[0]), (first - started) if first else float("nan"),
                    final_early)


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"mean {statistics.fmean(values) * 1000:6.0f} ms  median {statistics.median(values) * 1000:6.0f} ms  " \
           f"p90 {p90 * 1000:6.0f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voices", nargs="+", default=["en-us", "piper-1.0"])
    parser.add_argument("--limit", type=int, help="only this many questions, spread over the file")
    parser.add_argument("--pairs", type=int, default=25, help="clips of two questions in one breath (default 25)")
    args = parser.parse_args(argv)

    from voiceassist import providers
    from voiceassist.audio.recording import read_recording
    from voiceassist.config import load_config

    questions = load_questions()
    if args.limit:
        step = max(1, len(questions) // args.limit)
        questions = questions[::step][: args.limit]
    with tempfile.TemporaryDirectory(prefix="voiceassist-stream-bench-") as tmp:
        directory = Path(tmp)
        conf = directory / "voiceassist.conf"
        conf.write_text("")
        stt = providers.create_named("stt", "moonshine", load_config(conf, environ={}))
        print(f"making {len(questions) * len(args.voices)} clips ...", flush=True)
        clips = make_clips(questions, args.voices, directory / "clips")
        recordings = [read_recording(clip.path, MAX_SECONDS) for clip in clips]
        single = [(r.pcm, normalise(questions[clip.question].text)) for r, clip in zip(recordings, clips)]
        # Two questions in one breath: consecutive clips of a voice, 0.6 s apart.
        pause = bytes(int(0.6 * 8000) * 2)
        double = [(single[i][0] + pause + single[i + 1][0], single[i][1] + " " + single[i + 1][1])
                  for i in range(0, len(single) - 1, 2) if clips[i].voice == clips[i + 1].voice][: args.pairs]
        for name, items in (("one question", single), ("two questions in one breath", double)):
            if items:
                report(stt, name, items)
    return 0


def report(stt: object, name: str, items: list[tuple[bytes, str]]) -> None:
    from voiceassist.types import Recording

    whole_latency, whole_pairs, streamed, stream_pairs = [], [], [], []
    for pcm, reference in items:
        started = time.monotonic()
        text = stt.transcribe(Recording(pcm, 8000)).text  # type: ignore[attr-defined]
        whole_latency.append(time.monotonic() - started)
        whole_pairs.append((reference, normalise(text)))
        result = stream_clip(stt, pcm, 8000)
        streamed.append(result)
        stream_pairs.append((reference, normalise(result.text)))
    audio_seconds = sum(len(pcm) / 16000 for pcm, _ in items)
    print(f"\nMoonshine tiny-en, {name}: {len(items)} clips ({audio_seconds:.0f} s of speech)\n")
    print(f"end of audio -> last words   whole     {_summary(whole_latency)}")
    print(f"                             streamed  {_summary([s.end_to_words for s in streamed])}")
    ratio = statistics.fmean(s.end_to_words for s in streamed) / statistics.fmean(whole_latency)
    print(f"                             streamed / whole = {ratio:.2f}")
    first = [s.first_words for s in streamed if s.first_words == s.first_words]
    print(f"first words after the caller starts (streamed): {_summary(first)}")
    early = sum(s.final_before_end for s in streamed) / len(streamed)
    print(f"clips with words final before the audio ended: {early:.0%}")
    print(f"word accuracy                whole {word_accuracy(whole_pairs):.1%}   "
          f"streamed {word_accuracy(stream_pairs):.1%}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
