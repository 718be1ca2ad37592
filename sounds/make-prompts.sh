#!/bin/bash
# Regenerate our prompts as 8 kHz mono μ-law (.ulaw), the format Asterisk plays without transcoding
# on μ-law channels. Needs espeak-ng and sox (Debian packages). Run from anywhere.
#
# English is at the top (Asterisk's fallback for every language); each other language has a
# folder named as Asterisk's channel language names it (de, es). `voiceassist install` copies them to
# <sounds>/custom/voiceassist/ and <sounds>/<language>/custom/voiceassist/, where Playback looks
# for a channel whose CHANNEL(language) is that language. The beep is the same in every language.
set -euo pipefail
cd "$(dirname "$0")"
say() {  # voice file text
    espeak-ng -v "$1" -s 165 -w "/tmp/prompt-$$.wav" "$3"
    # Trim leading/trailing silence so prompts chain without gaps, then resample to the phone rate.
    sox "/tmp/prompt-$$.wav" -r 8000 -c 1 -t ul "$2.ulaw" silence 1 0.02 1% reverse silence 1 0.02 1% reverse
    rm -f "/tmp/prompt-$$.wav"
}
mkdir -p de es
say en-us greeting "Hello, this is the voice assistant. Please ask your question after the beep."
say de de/greeting "Hallo, hier ist der Sprachassistent. Bitte stellen Sie Ihre Frage nach dem Signalton."
say es es/greeting "Hola, le atiende el asistente de voz. Por favor, haga su pregunta después del tono."
say en-us didnt-catch "Sorry, I didn't catch that."
say de de/didnt-catch "Entschuldigung, das habe ich nicht verstanden."
say es es/didnt-catch "Perdone, no le he entendido."
say en-us cant-answer "Sorry, I can't answer right now. Please try again later."
say de de/cant-answer "Entschuldigung, ich kann gerade nicht antworten. Bitte versuchen Sie es später noch einmal."
say es es/cant-answer "Lo siento, ahora no puedo responder. Por favor, inténtelo más tarde."
say en-us anything-else "Anything else? Ask after the beep, or just hang up."
say de de/anything-else "Noch etwas? Fragen Sie nach dem Signalton, oder legen Sie einfach auf."
say es es/anything-else "¿Algo más? Pregunte después del tono, o simplemente cuelgue."
say en-us goodbye "Thank you for calling. Goodbye."
say de de/goodbye "Vielen Dank für Ihren Anruf. Auf Wiederhören."
say es es/goodbye "Gracias por su llamada. Adiós."
say en-us busy "Sorry, all assistants are busy right now. Please call again in a few minutes."
say de de/busy "Entschuldigung, alle Assistenten sind gerade beschäftigt. Bitte rufen Sie in ein paar Minuten wieder an."
say es es/busy "Lo siento, todos los asistentes están ocupados. Por favor, vuelva a llamar en unos minutos."
# The real-time conversation (no beep: the caller just talks, and can interrupt).
say en-us live-greeting "Hello, this is the voice assistant. How can I help?"
say de de/live-greeting "Hallo, hier ist der Sprachassistent. Wie kann ich helfen?"
say es es/live-greeting "Hola, le atiende el asistente de voz. ¿En qué puedo ayudarle?"
say en-us one-moment "One moment."
say de de/one-moment "Einen Moment."
say es es/one-moment "Un momento."
say en-us still-there "Are you still there?"
say de de/still-there "Sind Sie noch da?"
say es es/still-there "¿Sigue ahí?"
say en-us live-anything-else "Sorry, I didn't catch that. What can I do for you?"
say de de/live-anything-else "Entschuldigung, das habe ich nicht verstanden. Was kann ich für Sie tun?"
say es es/live-anything-else "Perdone, no le he entendido. ¿Qué puedo hacer por usted?"
# Actions: a transfer nobody answered, a message.
say en-us transfer-failed "Sorry, nobody could take your call right now."
say de de/transfer-failed "Entschuldigung, gerade kann niemand Ihren Anruf annehmen."
say es es/transfer-failed "Lo siento, ahora mismo nadie puede atender su llamada."
say en-us leave-message "Please leave your message after the tone, and hang up when you have finished."
say de de/leave-message "Bitte sprechen Sie Ihre Nachricht nach dem Signalton, und legen Sie auf, wenn Sie fertig sind."
say es es/leave-message "Por favor, deje su mensaje después del tono, y cuelgue cuando haya terminado."
say en-us message-saved "Thank you, your message has been saved."
say de de/message-saved "Vielen Dank, Ihre Nachricht wurde gespeichert."
say es es/message-saved "Gracias, su mensaje ha sido guardado."
# The beep: 400 ms of 1000 Hz.
sox -n -r 8000 -c 1 -t ul beep.ulaw synth 0.4 sine 1000 vol 0.5
