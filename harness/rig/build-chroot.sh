#!/bin/bash
# Build (or reuse) the Debian sid minbase chroot with Asterisk 22 that the tests call into.
#
# Usage: harness/rig/build-chroot.sh CHROOT_DIR
# The chroot is reused when its stamp matches this script's package list; a tarball cache in
# /var/cache/voiceassist-rig lets a fresh clone on the same machine skip debootstrap.
set -euo pipefail

ROOT=${1:?usage: build-chroot.sh CHROOT_DIR}
mkdir -p "$(dirname "$ROOT")"
CACHE_DIR=${VOICEASSIST_RIG_CACHE:-/var/cache/voiceassist-rig}
MIRROR=${VOICEASSIST_RIG_MIRROR:-http://deb.debian.org/debian}
# asterisk: the PBX; python3-venv: process AGI runs our package in the chroot's own Python;
# ffmpeg: the answer conversion of process AGI; ca-certificates: pip inside the chroot.
PACKAGES="asterisk python3 python3-venv ffmpeg ca-certificates"
KEY=$(echo "sid $PACKAGES v1" | sha256sum | cut -c1-12)
STAMP="$ROOT/.voiceassist-rig-$KEY"
TARBALL="$CACHE_DIR/chroot-$KEY.tar"

log() { echo "[rig] $*" >&2; }

if [ -e "$STAMP" ]; then
    log "reusing chroot $ROOT"
    exit 0
fi

if [ -s "$TARBALL" ]; then
    log "unpacking cached chroot $TARBALL"
    rm -rf "$ROOT.tmp" && mkdir -p "$ROOT.tmp"
    tar -C "$ROOT.tmp" -xf "$TARBALL"
else
    command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
    log "debootstrap sid minbase into $ROOT.tmp (about a minute)"
    rm -rf "$ROOT.tmp"
    debootstrap --variant=minbase sid "$ROOT.tmp" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
        || { tail -20 "$ROOT.debootstrap.log" >&2; exit 1; }
    cp /etc/resolv.conf "$ROOT.tmp/etc/resolv.conf"
    # The mirror may serve a snapshot whose Release file is past its Valid-Until date.
    echo 'Acquire::Check-Valid-Until "false";' >"$ROOT.tmp/etc/apt/apt.conf.d/99voiceassist-rig"
    mount -t proc proc "$ROOT.tmp/proc"
    trap 'umount "$ROOT.tmp/proc" 2>/dev/null || true' EXIT
    log "apt-get install $PACKAGES"
    # policy-rc.d keeps the package scripts from starting Asterisk inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$ROOT.tmp/usr/sbin/policy-rc.d"
    chmod +x "$ROOT.tmp/usr/sbin/policy-rc.d"
    chroot "$ROOT.tmp" apt-get update -q >"$ROOT.apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT.tmp" apt-get install -y -q --no-install-recommends \
        $PACKAGES >>"$ROOT.apt.log" 2>&1 || { tail -20 "$ROOT.apt.log" >&2; exit 1; }
    chroot "$ROOT.tmp" apt-get clean
    umount "$ROOT.tmp/proc"
    trap - EXIT
    mkdir -p "$CACHE_DIR"
    log "caching chroot as $TARBALL"
    tar -C "$ROOT.tmp" -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
fi
rm -rf "$ROOT"
mv "$ROOT.tmp" "$ROOT"
touch "$STAMP"
log "chroot ready: $(chroot "$ROOT" asterisk -V)"
