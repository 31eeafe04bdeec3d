"""`terraform init` + `terraform validate` of terraform/aws (module and example), offline,
against the hashicorp/aws provider from a local filesystem mirror (issue 18: the module
pinned provider 6.x for one attribute and had never been validated).

The mirror is found at $TF_PROVIDER_MIRROR, else /opt/tf-plugins (this machine's), else
.tools/tf-plugins (tools/install-test-deps.sh fills it on a fresh machine).  The Azure
module is not validated here: no azurerm provider is available offline (python-hcl2 and
checkov check it in tests/test_terraform.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MIRRORS = [os.environ.get("TF_PROVIDER_MIRROR"), "/opt/tf-plugins", str(ROOT / ".tools" / "tf-plugins")]
# The oldest provider major the module supports; validate against what the mirror holds.
PROVIDER = "registry.terraform.io/hashicorp/aws"


def _mirror() -> Path:
    for m in MIRRORS:
        if m and (Path(m) / PROVIDER).is_dir():
            return Path(m)
    pytest.fail(f"no local mirror of {PROVIDER} in {[m for m in MIRRORS if m]}: run tools/install-test-deps.sh")


def _terraform() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.fail("terraform is not installed: run tools/install-test-deps.sh")
    return found


@pytest.mark.parametrize("module", ["terraform/aws", "terraform/aws/examples/basic"])
def test_terraform_init_and_validate_offline(module: str, tmp_path: Path) -> None:
    work = tmp_path / "tf"
    # a copy: init writes .terraform/ and a lock file, which must not land in the repository
    shutil.copytree(ROOT / "terraform", work, ignore=shutil.ignore_patterns(".terraform*"))
    rc = tmp_path / "terraformrc"
    rc.write_text(f'provider_installation {{\n  filesystem_mirror {{\n    path = "{_mirror()}"\n  }}\n}}\n')
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(rc), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1",
               TF_DATA_DIR=str(tmp_path / "data"))
    cwd = work / module.removeprefix("terraform/")
    init = subprocess.run([_terraform(), "init", "-backend=false", "-input=false", "-no-color"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stdout[-3000:] + init.stderr[-3000:]
    versions = {p.name for p in (_mirror() / PROVIDER).iterdir()}
    assert any(v.startswith("5.") for v in versions), f"validated against {versions}: the 5.x promise needs a 5.x"
    val = subprocess.run([_terraform(), "validate", "-json", "-no-color"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    report = json.loads(val.stdout)
    assert report["valid"] is True and val.returncode == 0, json.dumps(report["diagnostics"], indent=1)[-4000:]
    # a deprecated attribute is a warning today and an error in the next major
    warnings = [d for d in report["diagnostics"] if d["severity"] == "warning"]
    assert not warnings, json.dumps(warnings, indent=1)[-4000:]
