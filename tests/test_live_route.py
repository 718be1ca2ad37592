"""The real-time route's correlation of control and media: only a media connection whose id the
route announced for a call, once, gets into that call (harness/phone_leg.py stands in for the
transport's leg; the transports' own refusals are tested with them)."""

from __future__ import annotations

import uuid

from harness.helpers import config_for
from harness.phone_leg import PhoneLeg
from voiceassist.asterisk.live import LiveCalls
from voiceassist.call.assistant import Assistant
from voiceassist.types import CallInfo

CALL = CallInfo(uniqueid="1733000000.7", channel="PJSIP/100-00000007", caller_number="100")


def live_calls(tmp_path, emulators) -> LiveCalls:
    config = config_for(emulators, tmp_path, extra="[live]\nmax_calls = 2\ngoodbye_after = 2\nstill_there_after = 2\n")
    return LiveCalls(Assistant(config))


def test_only_an_announced_id_gets_into_the_call_and_only_once(tmp_path, emulators):
    live = live_calls(tmp_path, emulators)
    call_id = live.announce(CALL)
    assert len(call_id) == 32 and int(call_id, 16) >= 0
    stranger = PhoneLeg(call_id=str(uuid.uuid4()))
    assert not live.accept(stranger)
    leg = PhoneLeg(call_id=str(uuid.UUID(call_id)))   # AudioSocket spells it with dashes
    assert live.accept(leg)
    leg.start()
    assert not live.accept(PhoneLeg(call_id=call_id)), "a second connection with the same id got in"
    entry = live.withdraw(call_id)
    assert entry is not None and entry.claimed
    leg.hang_up_at(0)
    assert entry.done.wait(10)
    assert not live.accept(PhoneLeg(call_id=call_id)), "an id is usable after its call ended"


def test_ids_that_are_not_ids_are_refused(tmp_path, emulators):
    live = live_calls(tmp_path, emulators)
    live.announce(CALL)
    for hostile in ("", "../../etc/passwd", "x" * 5000, "0" * 32 + "\n", "'; DROP TABLE calls; --"):
        assert not live.accept(PhoneLeg(call_id=hostile)), hostile


def test_every_call_gets_a_fresh_unguessable_id(tmp_path, emulators):
    live = live_calls(tmp_path, emulators)
    ids = {live.announce(CALL) for _ in range(200)}
    assert len(ids) == 200 and all(uuid.UUID(i).version == 4 for i in ids)


def test_real_time_calls_beyond_max_calls_are_told_busy(tmp_path, emulators):
    live = live_calls(tmp_path, emulators)
    assert live.try_begin() and live.try_begin()
    assert not live.try_begin()
    live.end()
    assert live.try_begin()


def test_a_live_call_in_german_hears_the_german_prompts(tmp_path, emulators):
    from pathlib import Path

    from voiceassist.audio.conversion import ulaw_to_pcm

    config = config_for(emulators, tmp_path, extra="[general]\nlanguages = de-DE\n[live]\ngoodbye_after = 2\n")
    live = LiveCalls(Assistant(config))
    leg = PhoneLeg(call_id=live.announce(CALL, language="de"))
    assert live.accept(leg)
    leg.start()
    leg.hang_up_at(6)
    assert live.withdraw(leg.call_id) is not None
    assert leg.wait_closed(15)
    sounds = Path(__file__).resolve().parents[1] / "sounds"
    greeting = ulaw_to_pcm((sounds / "de" / "live-greeting.ulaw").read_bytes(), 8000, 8000)
    english = ulaw_to_pcm((sounds / "live-greeting.ulaw").read_bytes(), 8000, 8000)
    heard = leg.heard_pcm()
    assert greeting[4000:12000] in heard and english[4000:12000] not in heard
