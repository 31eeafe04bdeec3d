# syntax=docker/dockerfile:1
#
# worm-pipeline sidecar image.
#
#   docker build -t worm-pipeline:dev .
#   docker run --rm worm-pipeline:dev --help
#
# Two stages: the builder compiles the C accelerator, turns the source tree into a wheel
# and installs it, with its dependencies, into a self-contained virtual environment at
# /opt/worm-pipeline; the runtime stage copies only that venv onto a fresh base (whose
# libcrypto the accelerator links).  No compiler, no pip cache, no source tree and no
# build tooling reach the final image.
#
# Capabilities (see docs/DEPLOYMENT.md, "Capabilities: the append-only attribute and non-root"):
# setting the append-only attribute (chattr +a) on hot segments needs CAP_LINUX_IMMUTABLE.
# The image's default user is the unprivileged uid 10001, which cannot hold that
# capability: Linux clears a non-root process's permitted and effective sets on execve,
# and Kubernetes has no ambient capabilities, so `capabilities.add` alone does not reach
# a non-root process.  Run as uid 10001 and the hot tier's `immutable = "auto"` policy
# degrades with a warning: segments stay hash-chained and signed but not append-only.
# For the append-only layer run the container as uid 0 with every capability dropped
# except LINUX_IMMUTABLE and with no-new-privileges, as deploy/kubernetes/ and
# localstack/docker-compose.yml do, and set `immutable = "require"` so a missing
# capability stops start-up instead of passing silently.  File capabilities on the
# interpreter were rejected: they are ignored under no-new-privileges
# (allowPrivilegeEscalation: false), would grant the capability to every Python
# process in the image, and make execve fail with EPERM wherever the capability is
# not in the bounding set.
#
# Pin by tag here; production builds should additionally pin the digest
# (python:3.11-slim-bookworm@sha256:...) and rebuild on base-image security updates.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The runtime stage's base: the same image unless given (tests/infra/test_image_build.py
# builds with a Debian bookworm pair made by debootstrap, where no registry is reachable).
ARG RUNTIME_IMAGE=${PYTHON_IMAGE}

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# A C compiler and OpenSSL's headers for the C accelerator (pipeline/_native.c); only
# this stage has them.  Versions come with the base image's Debian release (pin the base
# image's digest for reproducible builds, as noted above).  tests/test_dockerfile.py does
# not replay this step on the host: it checks that the host has the same tools instead.
# (The import check below runs with -P so that it sees the installed wheel, not /src.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

# Only what the wheel is built from; everything else stays out of the build context
# (.dockerignore) and out of the image.  requirements.lock pins every runtime dependency
# with its hashes (regenerate it with the command at its top when pyproject.toml changes).
COPY pyproject.toml setup.py README.md LICENSE requirements.lock ./
COPY pipeline/ pipeline/

# tests/test_dockerfile.py replays these steps in a fresh venv: keep them plain
# `&&`-joined commands.  Dependencies come from the lock only (--require-hashes, binary
# wheels); the project itself is installed with --no-deps, and `pip check` proves the lock
# satisfies it.  pip and setuptools are then removed from the venv: the runtime image
# cannot install anything.
RUN python -m venv /opt/worm-pipeline \
    && /opt/worm-pipeline/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock \
    && /opt/worm-pipeline/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/worm-pipeline/bin/pip install --no-cache-dir --no-deps /tmp/wheels/worm_pipeline-*.whl \
    && /opt/worm-pipeline/bin/pip check \
    && /opt/worm-pipeline/bin/python -P -c "import pipeline._native" \
    && /opt/worm-pipeline/bin/pipeline --version \
    && /opt/worm-pipeline/bin/pip uninstall --yes pip setuptools

FROM ${RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="worm-pipeline" \
      org.opencontainers.image.description="Tamper-evident audit logs: append-only hot tier, shipper to S3 Object Lock / Azure immutable blobs" \
      org.opencontainers.image.licenses="Apache-2.0"

# uid/gid 10001: the default, unprivileged identity.  The state directories are
# group-writable and setgid for gid 10001 so that a container run as uid 0 with group
# 10001 and no CAP_DAC_OVERRIDE (the append-only mode above) can still write them.
# The official python image carries pip and setuptools in its system Python: remove them
# (a Debian base without python3-pip has none, and `python -m pip` fails there).
RUN if python -m pip --version >/dev/null 2>&1; then \
        python -m pip uninstall --yes --root-user-action=ignore pip setuptools wheel; \
    fi \
    && groupadd --system --gid 10001 worm \
    && useradd --system --uid 10001 --gid worm --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin worm \
    && install -d -o 10001 -g 10001 -m 2770 /var/lib/worm-pipeline /var/lib/worm-pipeline/hot \
    && install -d -o 10001 -g 10001 -m 2770 /run/worm-pipeline \
    && install -d -o root -g 10001 -m 0750 /etc/worm-pipeline

COPY --from=builder /opt/worm-pipeline /opt/worm-pipeline

ENV PATH=/opt/worm-pipeline/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/worm-pipeline

# 9464: /metrics, /healthz, /readyz.  Ingest listens on a Unix socket in
# /run/worm-pipeline and on 127.0.0.1:8087 (loopback only, not exposed).
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"]

# On SIGTERM the sidecar seals the open segment and ships within [ops] shutdown_grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pipeline"]
CMD ["run", "--config", "/etc/worm-pipeline/pipeline.toml"]
