"""A call, independent of how it reaches us: the turn (question → transcript → reply → speech),
sentence-by-sentence playback, the conversation a chat model is given, and the assistant that
holds the providers and the journal.

The turn talks to a :class:`~voiceassist.call.channel.CallChannel` (play a sound, note the call's
state, a line on the console, has the caller hung up?), never to AGI: an AGI session, a
real-time media leg and the local channel of ``voiceassist ask`` are equals.
"""
