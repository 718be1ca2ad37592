"""The machine voiceassist runs on: files a root process reaches without following links, which
files root trusts (the config, the knowledge file), and working on the asterisk user's files as
that user."""
