#!/usr/bin/env bash
# Install checkov into its own virtual environment, away from the project's venv:
# checkov pins many libraries (boto3, pydantic, networkx, ...) that would fight the
# project's own dependency set.  Idempotent: a second run only checks the install.
#
#   tools/install-checkov.sh            # -> .tools/checkov-venv/bin/checkov
#   CHECKOV_VENV=/opt/checkov tools/install-checkov.sh
#
# tests/infra/test_terraform.py looks for checkov at $CHECKOV_BIN, then
# .tools/checkov-venv/bin/checkov, then on PATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CHECKOV_VENV:-$here/.tools/checkov-venv}"
# Pinned so a new release with new default checks cannot turn CI red overnight;
# bump deliberately and re-run `checkov -d terraform/aws -d terraform/azure`.
spec="${CHECKOV_SPEC:-checkov==3.3.30}"
python="${PYTHON:-python3}"

if [[ -x "$venv/bin/checkov" ]] && "$venv/bin/checkov" --version >/dev/null 2>&1; then
  echo "checkov already installed: $("$venv/bin/checkov" --version) at $venv/bin/checkov"
  exit 0
fi

"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$spec"
echo "checkov installed: $("$venv/bin/checkov" --version) at $venv/bin/checkov"
