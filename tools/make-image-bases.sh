#!/usr/bin/env bash
# Base images for building the Dockerfile where no registry image can be pulled (this
# project's CI machines): two Debian bookworm images made with debootstrap and imported
# into podman.  Idempotent: an image that exists is kept; the root filesystems are cached
# under .tools/image-base/ so a new podman store re-imports them in seconds.
#
#   localhost/worm-base-runtime:bookworm  minbase + python3 (3.11) + libssl3: no pip, no compiler
#   localhost/worm-base-build:bookworm    the same + python3-venv, python3-dev, gcc, libc6-dev, libssl-dev
#
# tests/infra/test_image_build.py builds the Dockerfile with
#   --build-arg PYTHON_IMAGE=localhost/worm-base-build:bookworm
#   --build-arg RUNTIME_IMAGE=localhost/worm-base-runtime:bookworm
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${IMAGE_BASE_CACHE:-.tools/image-base}"
# the Debian mirror this machine's apt already uses (first URI of its sources), or $DEBIAN_MIRROR
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror="$( { sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\).*/\2/p' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null || true; } \
    | head -n 1)"
fi
mkdir -p "$cache"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need podman || ! need debootstrap; then
  echo "image bases: apt-get install podman debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman debootstrap >/dev/null
fi

runtime="$cache/rootfs-runtime"
build="$cache/rootfs-build"
if [ ! -x "$runtime/usr/bin/python3" ]; then
  echo "image bases: debootstrap bookworm (runtime)"
  rm -rf "$runtime"
  debootstrap --variant=minbase --include=python3,python-is-python3,libssl3,ca-certificates \
    bookworm "$runtime" ${mirror:+"$mirror"} >"$cache/debootstrap.log" 2>&1
  rm -f "$runtime"/var/cache/apt/archives/*.deb
  rm -rf "$runtime"/var/lib/apt/lists/*
fi
if [ ! -x "$build/usr/bin/gcc" ]; then
  echo "image bases: build root (python3-venv python3-dev gcc libc6-dev libssl-dev)"
  rm -rf "$build"
  cp -a "$runtime" "$build"
  cp /etc/resolv.conf "$build/etc/resolv.conf"
  chroot "$build" bash -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends python3-venv python3-dev gcc libc6-dev libssl-dev >/dev/null \
    && apt-get clean && rm -rf /var/lib/apt/lists/*" 2>&1 | grep -v "posix_openpt" || true
  test -x "$build/usr/bin/gcc"
fi
for kind in runtime build; do
  if ! podman image exists "localhost/worm-base-$kind:bookworm"; then
    echo "image bases: podman import worm-base-$kind"
    tar -C "$cache/rootfs-$kind" -c . | podman import - "localhost/worm-base-$kind:bookworm" >/dev/null
  fi
done
echo "image bases ready: localhost/worm-base-runtime:bookworm localhost/worm-base-build:bookworm"
