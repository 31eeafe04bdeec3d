"""The container image built for real (issue 18) with podman from Debian's packages
(`--isolation chroot`, base images made by tools/make-image-bases.sh with debootstrap, no
registry), then run from its own root filesystem with chroot (`podman run` cannot start
containers on these machines): `pipeline --version`; a sidecar as uid 10001 that ingests
over HTTP, seals and ships to moto's server, and drains on SIGTERM; no pip, setuptools or
compiler in the runtime stage; dependencies exactly those of requirements.lock."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from packaging.requirements import Requirement

from tests.netutil import free_port
from tests.ship.conftest import make_bucket, s3_client

pytestmark = pytest.mark.tools  # podman and the debootstrap image bases

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/worm-pipeline:test"
BASES = {"PYTHON_IMAGE": "localhost/worm-base-build:bookworm", "RUNTIME_IMAGE": "localhost/worm-base-runtime:bookworm"}
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def _lock() -> dict[str, tuple[str, int]]:
    """name -> (pinned version, number of hashes) from requirements.lock."""
    out: dict[str, tuple[str, int]] = {}
    text = (ROOT / "requirements.lock").read_text()
    for block in re.split(r"\n(?=[a-zA-Z])", text):
        m = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", block)
        if m:
            out[m.group(1).lower().replace("_", "-")] = (m.group(2), block.count("--hash=sha256:"))
    return out


def test_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    lock = _lock()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"requirements.lock lacks {name}: regenerate it (command at its top)"
        version, _ = lock[name]
        assert req.specifier.contains(version), f"{name}=={version} is outside {req.specifier}"
    assert all(h >= 1 for _, h in lock.values()), "every pin carries its hashes (--require-hashes)"


def _name_version(stem: str) -> tuple[str, str]:
    name, version = stem.rsplit("-", 1)
    return name.lower().replace("_", "-"), version


def _podman() -> str:
    found = shutil.which("podman")
    if found is None:
        pytest.fail("podman is not installed: run tools/install-test-deps.sh")
    return found


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Build the image and mount a container of it; yields its root filesystem."""
    subprocess.run(["bash", str(ROOT / "tools" / "make-image-bases.sh")], check=True, timeout=1800,
                   capture_output=True)
    tmp = tmp_path_factory.mktemp("image")
    argv = [_podman(), "build", "--isolation", "chroot", "--network", "host", "--format", "docker", "-t", IMAGE]
    for k, v in BASES.items():
        argv += ["--build-arg", f"{k}={v}"]
    if HOST_CA.is_file():
        # Where HTTPS goes through an inspecting proxy, the host's CA bundle is what pip must
        # trust.  Build-time mounts only: nothing of this is committed into a layer.
        pip_conf = tmp / "pip.conf"
        pip_conf.write_text(f"[global]\ncert = {HOST_CA}\n")
        argv += ["-v", f"{HOST_CA}:{HOST_CA}:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro"]
    proc = subprocess.run([*argv, str(ROOT)], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    ctr = subprocess.run([_podman(), "create", IMAGE], capture_output=True, text=True, check=True).stdout.strip()
    try:
        mnt = Path(subprocess.run([_podman(), "mount", ctr], capture_output=True, text=True,
                                  check=True).stdout.strip())
        yield mnt
    finally:
        subprocess.run([_podman(), "umount", ctr], capture_output=True)
        subprocess.run([_podman(), "rm", "-f", ctr], capture_output=True)


@contextlib.contextmanager
def _kernel_filesystems(root: Path) -> Iterator[None]:
    mounts = [(["mount", "-t", "proc", "proc", str(root / "proc")], root / "proc"),
              (["mount", "--bind", "/dev", str(root / "dev")], root / "dev")]
    done = []
    try:
        for argv, target in mounts:
            subprocess.run(argv, check=True)
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], check=False)


def _in_image(root: Path, *argv: str, user: str = "10001:10001", env: dict[str, str] | None = None,
              **kw: object) -> list[str]:
    base = {"PATH": "/opt/worm-pipeline/bin:/usr/bin:/bin", "HOME": "/nonexistent", "PYTHONUNBUFFERED": "1"}
    envs = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
    return ["chroot", f"--userspec={user}", str(root), "/usr/bin/env", "-i", *envs, *argv]


@pytest.mark.slow
def test_image_runtime_has_no_pip_setuptools_or_compiler(rootfs: Path) -> None:
    site = rootfs / "opt/worm-pipeline/lib/python3.11/site-packages"
    assert (site / "pipeline").is_dir()
    for banned in ("pip", "setuptools", "wheel", "_distutils_hack"):
        assert not (site / banned).exists(), f"{banned} in the image's venv"
    assert not list(rootfs.glob("usr/lib/python3*/site-packages/pip")), "pip in the system Python"
    assert not list(rootfs.glob("usr/share/python-wheels/*")), "ensurepip wheels in the runtime"
    for compiler in ("gcc", "cc", "c++", "x86_64-linux-gnu-gcc-12"):
        assert not (rootfs / "usr/bin" / compiler).exists(), compiler
    proc = subprocess.run(_in_image(rootfs, "python", "-m", "pip", "--version"), capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named pip" in proc.stderr
    # the venv's distributions are exactly the lock's, plus the project
    installed = dict(_name_version(p.name.removesuffix(".dist-info")) for p in site.glob("*.dist-info"))
    lock = {k: v for k, (v, _) in _lock().items()}
    assert installed.pop("worm-pipeline") == subprocess.run(
        _in_image(rootfs, "python", "-c", "import pipeline; print(pipeline.__version__)"),
        capture_output=True, text=True, check=True).stdout.strip()
    assert installed == lock


@pytest.mark.slow
def test_image_version_and_accelerator(rootfs: Path) -> None:
    out = subprocess.run(_in_image(rootfs, "pipeline", "--version"), capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("worm-pipeline ")
    acc = subprocess.run(_in_image(rootfs, "python", "-c", "from pipeline import _accel; print(_accel.describe())"),
                         capture_output=True, text=True, check=True)
    assert acc.stdout.startswith("native"), acc.stdout


@pytest.mark.slow
def test_image_sidecar_ingests_ships_and_drains(rootfs: Path, moto_endpoint: str, tmp_path: Path) -> None:
    bucket = make_bucket(moto_endpoint)
    http_port, ops_port = free_port(), free_port()
    cfg = rootfs / "etc/worm-pipeline/pipeline.toml"
    cfg.write_text(
        '[hot]\ndir = "/var/lib/worm-pipeline/hot"\nstream = "img"\nsegment_window = "2s"\n'
        'heartbeat_interval = "1s"\nhot_retention = "0s"\n'
        f'[cold]\nurl = "s3://{bucket}/image?endpoint_url={moto_endpoint}&region=us-east-1"\nretention_days = 1\n'
        f'[ingest]\nhttp = "127.0.0.1:{http_port}"\n'
        f'[ops]\nlisten = "127.0.0.1:{ops_port}"\nshutdown_grace = "30s"\n')
    os.chmod(cfg, 0o644)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    log = tmp_path / "sidecar.log"
    with _kernel_filesystems(rootfs), open(log, "wb") as out:
        proc = subprocess.Popen(_in_image(rootfs, "pipeline", "run", "--config", "/etc/worm-pipeline/pipeline.toml",
                                          env=env), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "never ready:\n" + log.read_text()[-3000:]
                time.sleep(0.2)
            body = b"".join(orjson.dumps({"n": i, "who": "image-test"}) + b"\n" for i in range(500))
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/events", data=body, method="POST",
                                         headers={"Content-Type": "application/x-ndjson"})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
            time.sleep(1)
            proc.send_signal(signal.SIGTERM)  # the drain seals the open segment and ships it
            assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    keys = [o["Key"] for o in s3_client(moto_endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])]
    segments = [k for k in keys if not k.startswith("image/_index/")]  # the manifest index (docs/INDEX.md)
    assert segments and all(k.startswith("image/img/") for k in segments), keys
    assert any(k.startswith("image/_index/img/") for k in keys), keys  # the index part the drain wrote
    # every event reached locked storage: the stream verifies from the cold copy alone
    from pipeline.verify.chain import verify_stream
    from tests.ship.test_shipper import download_stream

    dest = tmp_path / "img"  # verify_stream takes the stream's name from its directory
    download_stream(moto_endpoint, bucket, "image/img/", dest)
    report = verify_stream(dest, workers=1)
    assert report.ok, report
    assert report.records >= 500, report.records  # the 500 events, plus heartbeats and seals
