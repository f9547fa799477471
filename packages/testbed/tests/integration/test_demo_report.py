"""What the demo and the benchmarks print and write: progress lines, tables, the plot and the docs page."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

from vpccni.testbed.bench import docs
from vpccni.testbed.bench.harness import percentile
from vpccni.testbed.bench.svgplot import Series, line_chart
from vpccni.testbed.cloud import CallRecord
from vpccni.testbed.demo import report
from vpccni.testbed.demo.progress import Progress


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_on_a_terminal_redraws_one_line() -> None:
    stream = _Stream(tty=True)
    bar = Progress(label="ADD", total=4, stream=stream)
    for _ in range(4):
        bar.advance(note="x")
    bar.close()
    text = stream.getvalue()
    assert text.count("\r\x1b[K") == 5 and text.endswith("\n") and text.count("\n") == 1
    assert "4/4" in text


def test_progress_without_a_terminal_prints_plain_lines_per_tenth() -> None:
    stream = _Stream(tty=False)
    bar = Progress(label="DEL", total=100, stream=stream)
    for i in range(100):
        bar.advance(failed=i == 3)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11 and "\r" not in stream.getvalue()
    assert lines[-1].startswith("DEL [" + "#" * 30 + "] 100/100, 1 failed")


def test_ec2_calls_table_counts_mutating_calls_and_errors() -> None:
    def call(action: str, error: str | None = None) -> CallRecord:
        return CallRecord(action=action, params={}, error_code=error, started=0.0, duration=0.0)

    text = report.ec2_calls_table(
        [call("AssignPrivateIpAddresses"), call("AssignPrivateIpAddresses", "RequestLimitExceeded"),
         call("DescribeInstances")]
    )  # fmt: skip
    assert text.splitlines()[1].split() == ["AssignPrivateIpAddresses", "2", "1", "mutating"]
    assert text.strip().endswith("3 calls, 2 mutating")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_svg_chart_is_valid_and_has_each_series() -> None:
    svg = line_chart(
        title="t", x_label="s", y_label="n",
        series=[Series(label="pool", color="#00f", points=[(0, 0), (1, 29), (2, 58)]),
                Series(label="assigned", color="#f00", points=[(0, 0), (2, 40)])],
    )  # fmt: skip
    root = ET.fromstring(svg)
    polylines = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(polylines) == 2
    assert {e.text for e in root.iter() if e.tag.endswith("text")} >= {"pool", "assigned", "t"}


def test_docs_page_reports_misses_as_misses() -> None:
    results = {key: None for key, *_ in docs.TARGETS}
    results.update(cni_add_p50_ms=46.4, cni_del_p50_ms=8.0, burst100_time_to_ip_s=None)
    results["notes"] = ["burst100_time_to_ip_s: not run"]
    results["machine"] = {"cores": 2, "kernel": "6.1", "python": "3.11.2"}
    page = docs.render(results, plot="img/p.svg")
    lines = page.splitlines()
    add = next(line for line in lines if "`cni_add_p50_ms`" in line)
    assert "46.4 ms" in add and "≤ 25 ms" in add and "**missed**" in add
    assert "| met |" in next(line for line in lines if "`cni_del_p50_ms`" in line)
    assert "not measured" in next(line for line in lines if "`burst100_time_to_ip_s`" in line)
    assert "![pool and assigned addresses over time](img/p.svg)" in page
    assert "- burst100_time_to_ip_s: not run" in page
