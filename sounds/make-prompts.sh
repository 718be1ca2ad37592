#!/bin/bash
# Regenerate our prompts as 8 kHz mono μ-law (.ulaw), the format Asterisk plays without transcoding
# on μ-law channels. Needs espeak-ng and sox (Debian packages). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
say() {  # name text
    espeak-ng -v en-us -s 165 -w "/tmp/prompt-$1.wav" "$2"
    # Trim leading/trailing silence so prompts chain without gaps, then resample to the phone rate.
    sox "/tmp/prompt-$1.wav" -r 8000 -c 1 -t ul "$1.ulaw" silence 1 0.02 1% reverse silence 1 0.02 1% reverse
    rm -f "/tmp/prompt-$1.wav"
}
say greeting "Hello, this is the voice assistant. Please ask your question after the beep."
say didnt-catch "Sorry, I didn't catch that."
say cant-answer "Sorry, I can't answer right now. Please try again later."
say anything-else "Anything else? Ask after the beep, or just hang up."
say goodbye "Thank you for calling. Goodbye."
say busy "Sorry, all assistants are busy right now. Please call again in a few minutes."
# The real-time conversation (no beep: the caller just talks, and can interrupt).
say live-greeting "Hello, this is the voice assistant. How can I help?"
say one-moment "One moment."
say still-there "Are you still there?"
say live-anything-else "Sorry, I didn't catch that. What can I do for you?"
# Actions: a transfer nobody answered, a message.
say transfer-failed "Sorry, nobody could take your call right now."
say leave-message "Please leave your message after the tone, and hang up when you have finished."
say message-saved "Thank you, your message has been saved."
# The beep: 400 ms of 1000 Hz.
sox -n -r 8000 -c 1 -t ul beep.ulaw synth 0.4 sine 1000 vol 0.5
