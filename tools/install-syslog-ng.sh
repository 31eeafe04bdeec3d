#!/usr/bin/env bash
# Unpacks Debian's syslog-ng-core into .tools/syslog-ng without installing it: as a package it
# conflicts with rsyslog (both provide system-log-daemon), and the transport tests need both.
# Its shared-library dependencies are ordinary packages and are installed.  Idempotent.
# Run it with LD_LIBRARY_PATH=.tools/syslog-ng/usr/lib/syslog-ng and
# --module-path=.tools/syslog-ng/usr/lib/syslog-ng/3.38 (tests/ingest/transport.py).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.tools/syslog-ng
if [ -x "$dest/usr/sbin/syslog-ng" ]; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
deps="libivykis0 libnet1 libjson-c5 libwrap0 libglib2.0-0 libpcre3 libcap2 libssl3 libsystemd0"
missing=""
for p in $deps; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "test deps: apt-get install$missing (syslog-ng's libraries)"
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
tmp=$(mktemp -d)
chmod 755 "$tmp"  # apt-get download drops privileges to _apt
trap 'rm -rf "$tmp"' EXIT
echo "test deps: apt-get download syslog-ng-core; dpkg -x into $dest"
(cd "$tmp" && apt-get download -qq syslog-ng-core >/dev/null)
mkdir -p "$dest.partial"
dpkg -x "$tmp"/syslog-ng-core_*.deb "$dest.partial"
rm -rf "$dest"
mv "$dest.partial" "$dest"
LD_LIBRARY_PATH="$dest/usr/lib/syslog-ng" "$dest/usr/sbin/syslog-ng" --version | head -1
