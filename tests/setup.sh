#!/bin/bash
# Install what the test suite (default) or the main job (call-8008.sh) needs: Debian packages, .venv
# with voiceassist and every extra, and the Asterisk chroot. Reuses whatever is already in place.
# Usage: tests/setup.sh [tests|main-job]
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-tests}
# debootstrap: the Asterisk chroot; ffmpeg, sox, espeak-ng: audio and the test callers' spoken
# questions; python3-venv: .venv; cmake, g++, make: llama-cpp-python compiles llama.cpp.
packages=(debootstrap ffmpeg sox espeak-ng python3-venv ca-certificates cmake g++ make)
case "$purpose" in
    # mariadb-server and postgresql: the storage tests start their own servers from these binaries;
    # chromium and chromium-driver: the web console's pages are tested in a real headless browser.
    tests) packages+=(mariadb-server postgresql chromium chromium-driver) ;;
    main-job) ;;
    *) echo "usage: tests/setup.sh [tests|main-job]" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] apt-get install ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# The chroot build is mostly downloads and disk; the pip step below is mostly compiling. Run both at once.
echo "[setup] building or reusing the Asterisk chroot (in the background)"
bash harness/rig/build-chroot.sh "$PWD/.rig/chroot" &
chroot_build=$!

if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv"
    python3 -m venv .venv
fi
extras="all,local,test"
stamp=".venv/.voiceassist-$(cat setup.cfg | sha256sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    echo "[setup] pip install -e '.[$extras]' (the first time llama-cpp-python compiles: about 7 minutes on 2 cores)"
    # llama-cpp-python compiles llama.cpp; its multimodal library (llava/mtmd) is not used here and
    # skipping it cuts the compile from 8 min 15 s to 6 min 50 s on 2 cores. GGML_NATIVE=OFF: a
    # native build uses every instruction the CPU flags advertise, and on virtual machines that
    # advertise AMX without granting it (this one) the first multi-token decode segfaults.
    export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"
    # Not quiet: the llama.cpp compile takes minutes and pip reports progress while it runs.
    .venv/bin/pip install --disable-pip-version-check --progress-bar off -e ".[$extras]" 2>&1 \
        | grep --line-buffered -v -E "is ignored|^Requirement already|^  Using cached|^Collecting|^  Downloading" || true
    .venv/bin/python -c "import llama_cpp, moonshine_voice, pocketsphinx, piper, snowballstemmer, google.genai, openai, pymysql, psycopg, alembic, rich, webrtcvad, soxr, numpy, mypy, flask, waitress, prometheus_client, selenium" \
        || { echo "[setup] pip install failed" >&2; exit 1; }
    touch "$stamp"
fi

wait "$chroot_build" || { echo "[setup] building the Asterisk chroot failed" >&2; exit 1; }
