"""Conversation engines side by side: end of the caller's speech -> first answer audio at the caller,
for the cascade, the business's own AI server (``[live] engine = ai_websocket``) and the two
speech-to-speech models (``openai_realtime``, ``gemini_live``), in one run.

    python -m benchmarks.engines [--calls N]

A phone line simulated in real time (harness/phone_leg.py: 20 ms frames both ways, what the
caller hears recorded) carries each call; the real SDKs run against emulators at fixed latencies,
chosen so that both engines must spend the same time on the path to the first audio:

* cascade: Google's streaming recogniser final 150 ms after the speech ends, the answer prepared
  after 100 ms of quiet on those words, Gemini's first token 300 ms, OpenAI speech's first byte
  200 ms: 750 ms (the 500 ms end silence runs alongside);
* ai_websocket: the AI server (harness/emulators/ai_server.py, a real WebSocket server on loopback)
  finds the end of the question after 500 ms of silence and answers 250 ms later: 750 ms;
* ai_websocket to `voiceassist ai-server`: the engine's server is another voiceassist serving the
  protocol with the cascade above behind it (750 ms, plus the protocol hop both ways);
* openai_realtime: the Realtime API emulator (the openai SDK's WebSocket client, μ-law both ways)
  ends the question after 500 ms of silence (server_vad) and answers 250 ms later: 750 ms;
* gemini_live: the Live API emulator (google-genai over TLS; 8 kHz up to 16 kHz, its 24 kHz answer
  down to 8 kHz) ends the question after 500 ms and answers 250 ms later: 750 ms.

Calls alternate between the engines. "Overhead" is the measured time less those 750 ms: what
voiceassist, the SDKs, the line and the measurement add.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
from pathlib import Path

from harness.emulators import GeminiEmulator, GoogleTTSEmulator, OpenAIEmulator, RealtimeEmulator, SpeechEmulator
from harness.emulators.ai_server import AIServerEmulator
from harness.emulators.gemini_live import GeminiLiveEmulator
from harness.emulators.openai_api import tone_for
from harness.emulators.speech_grpc import SpeechGrpcEmulator
from harness.helpers import config_for, streaming_providers
from harness.phone_leg import PhoneLeg
from harness.speech import speech_end_seconds, spoken_question, tone_spans
from voiceassist.asterisk.ai_server import AIProtocolServer
from voiceassist.audio.prompts import PromptSounds
from voiceassist.call.assistant import Assistant
from voiceassist.call.engine_conversation import EngineConversation, engine_for
from voiceassist.call.realtime import LiveConversation
from voiceassist.config import AIServer
from voiceassist.types import CallInfo

REPO = Path(__file__).resolve().parents[1]
RATE = 8000
QUESTION, MARKER_HZ = "What are your opening hours?", 2200
STREAM_FINAL_S, LLM_FIRST_S, TTS_FIRST_S, PREPARE_S = 0.15, 0.3, 0.2, 0.1
SERVER_SILENCE_MS, SERVER_ANSWER_S = 500, 0.25
PATH_S = STREAM_FINAL_S + PREPARE_S + LLM_FIRST_S + TTS_FIRST_S  # = SERVER_SILENCE_MS/1000 + SERVER_ANSWER_S
GREETING_S = len((REPO / "sounds/live-greeting.ulaw").read_bytes()) / 8000


def one_call(assistant: Assistant, engine: str, question: bytes, number: int) -> float | None:
    """Seconds from the end of the question's speech to the first answer audio the caller heard."""
    greeting = engine != "ai-server"
    leg = PhoneLeg(RATE, call_id=f"bench-{number}")
    asked_at = (GREETING_S if greeting else 0.0) + 0.5
    leg.say(question, at=asked_at)
    leg.hang_up_at(asked_at + len(question) / 2 / RATE + 4.0)
    call = CallInfo(uniqueid=f"1733000000.{number}", channel="PJSIP/100-00000001", caller_number="100")
    prompts = PromptSounds([REPO / "sounds"])
    conversation: LiveConversation | EngineConversation
    if engine == "cascade":
        conversation = LiveConversation(leg, assistant, call, prompts)
    else:
        chosen = engine_for(assistant)
        assert chosen is not None
        conversation = EngineConversation(leg, assistant, call, prompts, chosen)
    thread = threading.Thread(target=conversation.run, daemon=True)
    leg.start()
    thread.start()
    thread.join(60)
    heard = leg.heard_pcm()
    reply = f"Answer 1: you asked, {QUESTION}"
    spans = tone_spans(heard, RATE, tone_for(reply))
    if not spans:
        return None
    return spans[0][0] - (asked_at + speech_end_seconds(question, RATE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=8, help="calls per engine (default 8)")
    args = parser.parse_args(argv)
    emulators = {"speech": SpeechEmulator(), "gemini": GeminiEmulator(), "tts": OpenAIEmulator(),
                 "google_tts": GoogleTTSEmulator(), "realtime": RealtimeEmulator()}
    grpc = SpeechGrpcEmulator()
    ai_server = AIServerEmulator()
    live = GeminiLiveEmulator()
    os.environ["SSL_CERT_FILE"] = live.ca_file  # google-genai always connects over TLS
    try:
        grpc.final_delay = STREAM_FINAL_S
        grpc.transcripts[MARKER_HZ] = QUESTION
        emulators["gemini"].latency = LLM_FIRST_S
        emulators["tts"].latency = TTS_FIRST_S
        emulators["tts"].seconds = 1.0
        ai_server.transcripts = {MARKER_HZ: QUESTION}
        ai_server.answer_delay = SERVER_ANSWER_S
        ai_server.answer_seconds = 1.0
        for speech_to_speech in (emulators["realtime"], live):
            speech_to_speech.transcripts = {MARKER_HZ: QUESTION}
            speech_to_speech.answer_delay = SERVER_ANSWER_S
            speech_to_speech.answer_seconds = 1.0
        live.silence_ms = SERVER_SILENCE_MS
        with tempfile.TemporaryDirectory() as directory:
            base = Path(directory)
            question = spoken_question(base / "question", QUESTION, MARKER_HZ, RATE)
            assistants = {}
            served = Assistant(config_for(emulators, base / "served", extra=streaming_providers(grpc.endpoint)))
            served.prepare()
            ours = AIProtocolServer(served, AIServer(token="bench-token"), port=0)
            ours.start()
            urls = {"ai_websocket": (ai_server.url, ai_server.token),
                    "ai-server": (f"ws://127.0.0.1:{ours.port}/", "bench-token")}
            for engine in ("cascade", "ai_websocket", "ai-server", "openai_realtime", "gemini_live"):
                url, token = urls.get(engine, ("", ""))
                assistants[engine] = Assistant(config_for(emulators, base / engine, extra=f"""
{streaming_providers(grpc.endpoint)}
[live]
engine = {"ai_websocket" if engine == "ai-server" else engine}
end_silence_ms = 500
[ai_websocket]
url = {url}
token = {token}
vad_silence_duration_ms = {SERVER_SILENCE_MS}
greet = {"no" if engine == "ai-server" else "yes"}
[openai_realtime]
vad_silence_duration_ms = {SERVER_SILENCE_MS}
[gemini_live]
base_url = {live.base_url}
api_key = {live.api_key}
vad_silence_duration_ms = {SERVER_SILENCE_MS}
"""))
                assistants[engine].prepare()
            measured: dict[str, list[float]] = {engine: [] for engine in assistants}
            lost = {engine: 0 for engine in assistants}
            for number in range(args.calls + 1):  # the first call of each warms up, left out
                for engine, assistant in assistants.items():
                    seconds = one_call(assistant, engine, question, number * 10 + len(measured[engine]))
                    if number == 0:
                        continue
                    if seconds is None:
                        lost[engine] += 1
                    else:
                        measured[engine].append(seconds)
            ours.shutdown()
    finally:
        ai_server.close()
        live.close()
        grpc.close()
        for server in emulators.values():
            server.close()
    print(f"End of speech -> first answer audio at the caller, {args.calls} calls per engine "
          f"(emulated path: {PATH_S * 1000:.0f} ms for each)")
    print(f"{'engine':<16}{'median':>9}{'p90':>9}{'overhead':>10}{'x cascade':>11}{'unanswered':>12}")
    cascade_median = statistics.median(measured["cascade"]) if measured["cascade"] else float("nan")
    for engine, values in measured.items():
        if not values:
            print(f"{engine:<16}{'-':>9}{'-':>9}{'-':>10}{'-':>11}{lost[engine]:>12}")
            continue
        ordered = sorted(values)
        median = statistics.median(ordered)
        p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
        print(f"{engine:<16}{median * 1000:>7.0f}ms{p90 * 1000:>7.0f}ms{(median - PATH_S) * 1000:>8.0f}ms"
              f"{median / cascade_median:>10.2f}x{lost[engine]:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
