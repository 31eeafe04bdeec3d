#!/usr/bin/env bash
# Run LocalStack (S3 only) on this host, without Docker.
#
#   localstack/run-host.sh                 # install if needed, then serve on 127.0.0.1:4566
#   localstack/run-host.sh --install-only  # only create/refresh the virtual environment
#   localstack/run-host.sh --port 4600     # another port (or LOCALSTACK_PORT=4600)
#
# The `localstack` CLI needs Docker and an auth token; the runtime itself does not.
# localstack-core 4.13.1 is the last release for Python 3.11 (4.14+ need 3.12), and it
# needs older cbor2/cryptography/pyopenssl than pip would pick by itself.
#
# Environment:
#   LOCALSTACK_VENV   virtual environment (default: <repo>/.tools/localstack-venv)
#   LOCALSTACK_PORT   listen port on 127.0.0.1 (default 4566)
#   LOCALSTACK_DATA   FILESYSTEM_ROOT; default: a fresh temporary directory, removed on exit
#   PYTHON            interpreter for the venv (default python3, must be 3.11)
#
# The server runs in the foreground as a child of this script; SIGTERM or SIGINT to
# the script stops it and removes the temporary data directory.  Readiness: poll
# http://127.0.0.1:PORT/_localstack/health until services.s3 is "available" (~2 s).
# Without OVERRIDE_IN_DOCKER=0 and FILESYSTEM_ROOT LocalStack would write to
# /var/lib/localstack and /tmp/localstack.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LOCALSTACK_VENV:-$here/.tools/localstack-venv}"
port="${LOCALSTACK_PORT:-4566}"
python="${PYTHON:-python3}"
install_only=0
requirements=(
  "localstack-core[runtime]==4.13.1"
  "cbor2<6"
  "cryptography<45"
  "pyopenssl<25"
  "service-identity"
)

while [[ $# -gt 0 ]]; do
  case "$1" in
    --install-only) install_only=1 ;;
    --port) port="${2:?--port needs a value}"; shift ;;
    --port=*) port="${1#--port=}" ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-host.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

marker="$venv/.worm-pipeline-requirements"
wanted="$(printf '%s\n' "${requirements[@]}")"
if [[ -x "$venv/bin/python" && -f "$marker" && "$(cat "$marker")" == "$wanted" ]] \
  && "$venv/bin/python" -c "import localstack.runtime.main" 2>/dev/null; then
  echo "run-host.sh: LocalStack already installed in $venv" >&2
else
  "$python" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"run-host.sh: localstack-core 4.13.1 needs Python 3.11, {sys.executable} is {sys.version.split()[0]}")
PY
  echo "run-host.sh: installing LocalStack into $venv" >&2
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "${requirements[@]}"
  printf '%s\n' "$wanted" > "$marker"
fi

if [[ "$install_only" == 1 ]]; then
  exit 0
fi

data="${LOCALSTACK_DATA:-}"
cleanup_data=0
if [[ -z "$data" ]]; then
  data="$(mktemp -d "${TMPDIR:-/tmp}/localstack-host.XXXXXX")"
  cleanup_data=1
fi
mkdir -p "$data"

child=""
stop() {
  if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if [[ "$cleanup_data" == 1 ]]; then
    rm -rf "$data"
  fi
}
trap 'stop; exit 143' TERM
trap 'stop; exit 130' INT
trap 'stop' EXIT

echo "run-host.sh: LocalStack S3 on http://127.0.0.1:$port (data in $data)" >&2
env OVERRIDE_IN_DOCKER=0 \
    SERVICES=s3 \
    GATEWAY_LISTEN="127.0.0.1:$port" \
    LOCALSTACK_HOST="127.0.0.1:$port" \
    FILESYSTEM_ROOT="$data" \
    DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    "$venv/bin/python" -m localstack.runtime.main &
child=$!
set +e
wait "$child"
status=$?
set -e
child=""
exit "$status"
