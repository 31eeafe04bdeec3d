"""The checkpoint signing key as Kubernetes delivers it (issue 18): a Secret volume under a
pod-level fsGroup (the kubelet's atomic-writer layout, group read bit added, read-only
mount), or a ``secretKeyRef`` environment variable.  Every key error is one line, exit 2."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.checkpoint import ENV_SIGNING_KEY, NoteError, Signer, configured_signer, load_signer, write_key_pair
from tests.ship.conftest import make_bucket
from tests.ship.test_sidecar import Sidecar

REPO = Path(__file__).resolve().parents[2]
FS_GROUP = 10001


@contextlib.contextmanager
def kubelet_secret_volume(root: Path, files: dict[str, str], mode: int, *, read_only: bool = True) -> Iterator[Path]:
    """A tmpfs laid out exactly as the kubelet's atomic writer lays out a Secret volume:
    ``..<timestamp>/FILE`` (root:fsGroup, ``mode``), ``..data -> ..<timestamp>``,
    ``FILE -> ..data/FILE``; then remounted read-only as the container sees it."""
    mnt = root / "secrets"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=1777", "tmpfs", str(mnt)], check=True)
    try:
        ts = mnt / "..2026_12_06_16_00_00.000000001"
        ts.mkdir()
        for name, text in files.items():
            f = ts / name
            f.write_text(text)
            os.chown(f, 0, FS_GROUP)
            os.chmod(f, mode)
        (mnt / "..data").symlink_to(ts.name)
        for name in files:
            (mnt / name).symlink_to(f"..data/{name}")
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.fixture
def signer() -> Signer:
    return Signer.generate("example.com/audit")


def test_fsgroup_projected_secret_is_accepted(tmp_path: Path, signer: Signer) -> None:
    # defaultMode 0400 + fsGroup -> 0440 on the node (kubernetes#57923): this used to crash-loop
    with kubelet_secret_volume(tmp_path, {"app.key": signer.to_string() + "\n"}, 0o440) as mnt:
        assert load_signer(mnt / "app.key").verifier().to_string() == signer.verifier().to_string()


@pytest.mark.parametrize("mode", [0o444, 0o460, 0o450, 0o640 | 0o004])
def test_projected_secret_with_other_or_group_write_bits_is_refused(tmp_path: Path, signer: Signer,
                                                                    mode: int) -> None:
    with kubelet_secret_volume(tmp_path, {"app.key": signer.to_string()}, mode) as mnt, \
            pytest.raises(NoteError, match=f"mode {mode:o}"):
        load_signer(mnt / "app.key")


def test_group_readable_key_outside_a_secret_volume_is_refused(tmp_path: Path, signer: Signer) -> None:
    key, _ = write_key_pair(signer, tmp_path)
    key.chmod(0o440)
    with pytest.raises(NoteError, match="accessible by group or others"):
        load_signer(key)
    # a look-alike layout on a writable mount is not the kubelet's
    with kubelet_secret_volume(tmp_path, {"app.key": signer.to_string()}, 0o440, read_only=False) as mnt, \
            pytest.raises(NoteError, match="accessible by group or others"):
        load_signer(mnt / "app.key")


def test_key_errors_name_the_source_and_never_the_key(tmp_path: Path, signer: Signer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("PRIVATE+KEY+x+0000zzzz+secretmaterial\n")
    bad.chmod(0o600)
    with pytest.raises(NoteError) as e:
        load_signer(bad)
    assert str(bad) in str(e.value) and "secretmaterial" not in str(e.value)
    monkeypatch.setenv(ENV_SIGNING_KEY, "garbage-secretmaterial")
    with pytest.raises(NoteError) as e:
        load_signer(None)
    assert ENV_SIGNING_KEY in str(e.value) and "secretmaterial" not in str(e.value)
    with pytest.raises(NoteError, match="not a regular file"):
        load_signer(tmp_path)


def test_configured_signer_env_file_both_none(tmp_path: Path, signer: Signer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key, _ = write_key_pair(signer, tmp_path)
    monkeypatch.delenv(ENV_SIGNING_KEY, raising=False)
    assert configured_signer(None) is None
    assert configured_signer(key) is not None
    monkeypatch.setenv(ENV_SIGNING_KEY, signer.to_string())
    got = configured_signer(None)
    assert got is not None and got.key_id == signer.key_id
    with pytest.raises(NoteError, match="given twice"):
        configured_signer(key)


def _run_check(cfg: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != ENV_SIGNING_KEY}
    return subprocess.run([sys.executable, "-m", "pipeline", "run", "--config", str(cfg), "--check"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(clean, PYTHONPATH=str(REPO), **env))


def _config(tmp_path: Path, key: Path | None) -> Path:
    cfg = tmp_path / "pipeline.toml"
    signing = f'[signing]\nkey_file = "{key}"\n' if key else ""
    cfg.write_text(f'[hot]\ndir = "{tmp_path}/hot"\n[cold]\nurl = "file://{tmp_path}/cold"\n{signing}')
    return cfg


@pytest.mark.parametrize("case", ["group-readable", "garbage", "env-garbage", "both"])
def test_run_check_loads_the_key_and_fails_in_one_line(tmp_path: Path, signer: Signer, case: str) -> None:
    key, _ = write_key_pair(signer, tmp_path / "keys")
    env: dict[str, str] = {}
    if case == "group-readable":
        key.chmod(0o640)
    elif case == "garbage":
        key.write_text("not a key\n")
    elif case == "env-garbage":
        env[ENV_SIGNING_KEY] = "not a key"
    else:
        env[ENV_SIGNING_KEY] = signer.to_string()
    p = _run_check(_config(tmp_path, None if case == "env-garbage" else key), **env)
    assert p.returncode == 2, p.stdout + p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr and signer.to_string() not in p.stderr + p.stdout
    assert p.stderr.startswith("pipeline: [signing]"), p.stderr


def test_run_check_passes_a_good_key_from_file_or_env(tmp_path: Path, signer: Signer) -> None:
    key, _ = write_key_pair(signer, tmp_path / "keys")
    assert _run_check(_config(tmp_path, key)).returncode == 0
    p = _run_check(_config(tmp_path, None), **{ENV_SIGNING_KEY: signer.to_string()})
    assert p.returncode == 0, p.stderr
    assert signer.to_string() not in p.stdout + p.stderr


def test_sidecar_signs_checkpoints_with_the_key_from_the_environment(
        tmp_path: Path, moto_endpoint: str, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.witness.directory import read_witness_checkpoints

    witness = tmp_path / "witness"
    pub = tmp_path / "app.pub"
    pub.write_text(signer.verifier().to_string() + "\n")
    sc = Sidecar(tmp_path, moto_endpoint, make_bucket(moto_endpoint), hot={"hot_retention": "1h"})
    sc.sections["signing"] = {"checkpoint_interval": "1s", "origin": "example.com/audit/app",
                              "witnesses": [f"file://{witness}"]}
    sc.write_config()
    monkeypatch.setenv(ENV_SIGNING_KEY, signer.to_string())
    sc.start()
    try:
        assert sc.post([{"i": i} for i in range(20)])[0] == 200
        time.sleep(2.5)
    finally:
        assert sc.stop() == 0
    notes = read_witness_checkpoints(witness, "example.com/audit/app")
    assert notes, "no checkpoint signed with the environment's key reached the witness\n" + sc.log.read_text()[-2000:]
    p = subprocess.run([sys.executable, "-m", "pipeline", "verify", "--hot", str(sc.hot), "--witness-dir",
                        str(witness), "--vkey", str(pub), "--origin", "example.com/audit/app", "--json"],
                       capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert p.returncode == 0, p.stdout.decode()[-2000:] + p.stderr.decode()[-2000:]
    assert signer.to_string().encode() not in sc.log.read_bytes()
