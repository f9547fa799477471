"""The agent process with network policy off (upstream's default container args): it removes a table left
from an earlier life, answers EnforceNpToPod with success, and ends cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from vpccni.netpol.agent.ruleset import DROP, Ruleset
from vpccni.netpol.agent.tables import NftPolicyTables
from vpccni.networkutils.commands import ToolRunner
from vpccni.rpc import rpc_pb2, rpc_pb2_grpc
from vpccni.testbed.datapath import namespaces as ns


def test_disabled_agent(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the netns tier needs root")
    name = f"vnp-off-{os.getpid()}"
    ns.create_netns(name)
    try:
        tables = NftPolicyTables(runner=ToolRunner(netns=name))
        tables.apply(Ruleset(ingress={"eniaaaaaaaaaaa": DROP}))
        env = {**os.environ, "VPCCNI_RUN_DIR": str(tmp_path)}
        argv = [sys.executable, "-m", "vpccni.netpol.agent.main", "--enable-network-policy=false",
                "--log-file=stdout", "--health-probe-bind-addr=127.0.0.1:8163"]  # fmt: skip
        proc = subprocess.Popen(["ip", "netns", "exec", name, *argv], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)  # fmt: skip
        try:
            sock = tmp_path / "npa.sock"
            deadline = time.monotonic() + 30
            while not sock.exists():
                assert proc.poll() is None and time.monotonic() < deadline, "the agent did not start"
                time.sleep(0.05)
            with grpc.insecure_channel(f"unix:{sock}") as channel:
                reply = rpc_pb2_grpc.NPBackendStub(channel).EnforceNpToPod(
                    rpc_pb2.EnforceNpRequest(
                        K8S_POD_NAME="web", K8S_POD_NAMESPACE="x", NETWORK_POLICY_MODE="strict"
                    ),
                    timeout=5,
                )
            assert reply.Success
            assert tables.strict_pods() is None  # the old table is gone
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
    finally:
        ns.delete_netns(name)
