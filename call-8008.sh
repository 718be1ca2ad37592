#!/bin/bash
# The main job: on a fresh Debian 12 machine, as root, install everything and place a real call to
# 8008 on Asterisk 22 (in a chroot), answered by voiceassist with local providers (or the cloud
# ones when their keys are set). Optional arguments: --live (the same call as a real-time
# conversation over AudioSocket), your own question as a WAV file.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" != 0 ]; then
    echo "call-8008.sh: run as root (it installs packages, builds a chroot and mounts /proc in it)" >&2
    exit 1
fi
live=
if [ "${1:-}" = "--live" ]; then live=--live; shift; fi
question=${1:+$(realpath "$1")}
bash tests/setup.sh main-job
exec .venv/bin/python -m harness.rig.main_job $live ${question:+"$question"}
