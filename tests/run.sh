#!/bin/bash
# The test command: on a fresh Debian 12 machine, as root, installs everything the suite needs
# (Debian packages, a venv with voiceassist and its extras, the Asterisk 22 chroot) and runs it.
# Extra arguments go to pytest, e.g.  bash tests/run.sh -k fastagi
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: run as root (it installs packages, builds a chroot and mounts /proc in it)" >&2
    exit 1
fi
bash tests/setup.sh
# The types first (strict on the wire, the call and the provider Protocols: see setup.cfg [mypy]).
echo "[types] mypy voiceassist"
.venv/bin/python -m mypy voiceassist
exec .venv/bin/python -m pytest "$@"
