"""The wire to Asterisk: how a call reaches voiceassist and how voiceassist answers it.

``agi`` is the AGI session (pyst2, adapted to Python 3, sockets, threads and hostile text);
``fastagi`` the FastAGI server (who may connect, how many at once, draining on SIGTERM) and
``workers`` its worker processes; ``process_agi`` the per-call process Asterisk starts;
``listen`` the EAGI listener that records a question until the caller stops talking; ``channel``
the AGI session as a :class:`~voiceassist.call.channel.CallChannel`. ``dialplan`` is the single
home of the contract with ``extensions_custom.conf``: the AGI arguments of each action parsed into
typed requests, a turn's outcome written back as ``VA_*`` variables, the one dispatcher, the
FastAGI address and the defaults both sides share. ``live`` is the real-time route: it holds the
call's AGI session while the audio travels over a media transport, ``audiosocket`` (paced by
its pump process, ``media_pump``) or ``websocket_media`` (Asterisk's WebSocket channel), whose
legs share ``legs`` (the caller's events, the outgoing queue, the 20 ms clock).

(pyst2's own top-level package is also called ``asterisk``: ``from asterisk import agi`` names
pyst2, ``from voiceassist.asterisk import agi`` names ours.)
"""
