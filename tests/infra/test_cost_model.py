"""docs/COSTS.md against tools/cost_model.py: the generated block is current, and the
figures quoted in the prose are the script's."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "COSTS.md"


@pytest.fixture(scope="module")
def cm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cost_model", REPO / "tools" / "cost_model.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cost_model"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


def doc() -> str:
    return DOC.read_text()


def table_row(section: str, *cells: str) -> list[str]:
    """The row of the table under ``### section`` whose leading cells are ``cells``."""
    text = doc()
    start = text.index(f"### {section}\n")
    end = text.find("\n### ", start + 1)
    for line in text[start:end if end > 0 else None].splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if parts[: len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row {cells} under {section}")


def test_generated_block_is_current(cm: ModuleType) -> None:
    text = doc()
    block = text[text.index(cm.BEGIN) + len(cm.BEGIN): text.index(cm.END)]
    assert block == "\n" + cm.tables(), "docs/COSTS.md is stale: run tools/cost_model.py --write-doc"


def test_cells_against_the_model(cm: ModuleType) -> None:
    std, _ia, gir, cool = cm.CLASSES
    r = cm.row(std, 100, 5, True)
    cells = table_row("S3 Standard", "100", "5 min", "zstd")
    assert cells[3] == f"{r.requests_per_day:,.0f}" == "115,200"  # 100 x 2 segments x 288 windows x 2 requests
    assert cells[6] == cm.money(r.put_cost_year)
    assert cells[8] == cm.money(r.retention_total_per_year)
    r = cm.row(gir, 10_000, 15, False)
    cells = table_row("S3 Glacier Instant Retrieval", "10,000", "15 min", "none")
    assert cells[4] == f"{r.stored_gb_per_day:,.2f}" and cells[7] == cm.money(r.storage_cost_first_year)
    r = cm.row(cool, 1, 1, True)
    cells = table_row("Azure Blob Cool (LRS)", "1", "1 min", "zstd")
    assert cells[3] == "4,320"  # 1,440 segments x (1 write + 2 reads)
    assert cells[6] == cm.money(r.put_cost_year) and r.readback_cost_year > 0
    cells = table_row("Shortest window that keeps request cost below storage cost (one sidecar)",
                      "S3 Glacier Instant Retrieval", "zstd")
    assert cells[2].startswith(cm.fmt_window(cm.break_even_window_min(gir, True, 1, 12)))


def test_arithmetic_by_hand(cm: ModuleType) -> None:
    """The model's numbers recomputed from first principles for one row."""
    std = cm.CLASSES[0]
    r = cm.row(std, 1, 1, False)
    day_bytes = 1000 * 86400 * 313
    assert r.segments_per_day == 1440 and r.requests_per_day == 2880
    assert r.stored_gb_per_day == pytest.approx(day_bytes / 2**30)
    assert r.request_cost_year == pytest.approx(1440 * 365 * (0.005 + 0.0004) / 1000)
    assert r.retention_total_per_year == pytest.approx(
        day_bytes * 365 / 2**30 * 0.023 * 2555 / (365 / 12) + r.request_cost_year)
    # 15-minute windows are cut by the 64 MiB segment limit into 5 segments.
    assert cm.segment_shape(15) == (5, pytest.approx(1000 * 900 * 313 / 5))
    # Minimum billable object size: a tiny compressed object in IA is billed as 128 KB.
    tiny = cm.row(cm.CLASSES[1], 1, 1, True, events_per_s=1)
    assert tiny.object_bytes < 128 * 1024 == tiny.billed_object_bytes


def test_prose_figures_are_the_models(cm: ModuleType) -> None:
    prose = doc()[: doc().index(cm.BEGIN)]
    std = cm.CLASSES[0]
    z, n = cm.row(std, 1, 5, True), cm.row(std, 1, 5, False)
    assert f"costs {cm.money(z.retention_total_per_year)} instead of {cm.money(n.retention_total_per_year)}" in prose
    lz, ln = cm.lifecycle_total_per_year(1, 5, True)[1], cm.lifecycle_total_per_year(1, 5, False)[1]
    assert f"{cm.money(lz)} instead of {cm.money(ln)} with the Terraform lifecycle" in prose
    one = cm.row(std, 1, 1, True)
    assert f"{cm.money(one.put_cost_year)} a year" in prose and f"{cm.money(one.storage_cost_first_year)} of" in prose
    assert f"| {cm.COMPRESSION_RATIO:.2f}x" in prose and f"by\n  {cm.COMPRESSION_RATIO:.2f}" in prose
    m = re.search(r"at 10 events/s use (\d+) minutes or more for Glacier IR", prose)
    assert m and cm.fmt_window(cm.break_even_window_min(cm.CLASSES[2], True, 10, 12)) == f"{m.group(1)} min"
