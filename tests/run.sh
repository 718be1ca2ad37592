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

# debootstrap builds the Asterisk chroot; ffmpeg converts answers; sox + espeak-ng make the test
# callers' spoken questions; python3-venv for the venv.
packages=(debootstrap ffmpeg sox espeak-ng python3-venv ca-certificates)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    python3 -m venv .venv
fi
stamp=".venv/.voiceassist-$(sha256sum setup.cfg | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    echo "[setup] pip install -e '.[all,test]'"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[all,test]'
    touch "$stamp"
fi

echo "[setup] building or reusing the Asterisk chroot"
bash tests/rig/build-chroot.sh "$PWD/.rig/chroot"

exec .venv/bin/python -m pytest "$@"
