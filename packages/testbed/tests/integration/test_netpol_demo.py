"""`bash scripts/demo.sh --network-policy`, as a newcomer runs it: every matrix passes, exit 0."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from vpccni.testbed.netpol.demo import run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def test_the_network_policy_demo_passes(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run(out, tmp_path) == 0, out.getvalue()
    text = out.getvalue()
    assert text.count(": PASS\n") == 6 and "FAIL" not in text  # five matrices and the summary
    assert "ALLOWED: allowed by backend/api-clients" in text and "DROPPED: no rule" in text
    assert "jobs/batch-0" in text and "(strict mode)" in text
