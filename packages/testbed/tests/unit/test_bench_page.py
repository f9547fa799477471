"""docs/benchmarks.md is re-rendered by three benchmarks; each run must keep the others' sections."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from vpccni.testbed.bench.docs import write_page

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[4]


def _layout(tmp_path: Path, names: tuple[str, ...]) -> tuple[Path, Path]:
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    for name in names:
        shutil.copy(REPO / "bench" / "results" / name, results / name)
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "docs" / "img" / "fleet-pods.svg").write_text("<svg/>")
    return tmp_path / "docs" / "benchmarks.md", results


def test_the_page_has_every_benchmarks_section(tmp_path: Path) -> None:
    page, results = _layout(tmp_path, ("latest.json", "netpol.json", "fleet.json"))
    write_page(page, results_dir=results)
    text = page.read_text()
    assert "## Results against the targets" in text
    assert "## Network policy" in text
    assert "## At scale" in text
    assert "img/fleet-pods.svg" in text


def test_a_missing_results_file_drops_only_its_section(tmp_path: Path) -> None:
    page, results = _layout(tmp_path, ("latest.json", "fleet.json"))
    write_page(page, results_dir=results)
    text = page.read_text()
    assert "## Network policy" not in text
    assert "## At scale" in text
