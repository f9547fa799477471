"""The whole conformance suite with real packets: the Kubernetes e2e NetworkPolicy cases and vpccni's update
cases on a two-node testbed running ipamd, the agent and the controller (about two minutes)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from vpccni.testbed.netpol import cases, steps
from vpccni.testbed.netpol.__main__ import CONFORMANCE_ENV
from vpccni.testbed.netpol.cluster import PolicyCluster
from vpccni.testbed.netpol.conformance import ConformanceRun


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConformanceRun]:
    workdir: Path = tmp_path_factory.mktemp("netpol-conformance")
    with PolicyCluster(workdir=workdir, nodes=2, agent_env=CONFORMANCE_ENV) as pc:
        conformance = ConformanceRun(pc, out=io.StringIO())
        conformance.setup()
        yield conformance


@pytest.mark.parametrize("case", cases.ALL_CASES, ids=lambda case: case.name[:90])
def test_case(run: ConformanceRun, case: steps.Case) -> None:
    result = run.run_case(case)
    if result.skipped:
        pytest.skip(result.skipped)
    assert result.passed, "\n".join(result.failures)
    assert result.checks == sum(isinstance(s, steps.Check) for s in case.steps)
