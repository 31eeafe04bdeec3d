#!/usr/bin/env bash
# Installs what the test suite needs beyond the Python test extra.  Idempotent; each step
# is skipped when already done.  Called by `make test` (and so by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "test deps: nothing extra yet"
