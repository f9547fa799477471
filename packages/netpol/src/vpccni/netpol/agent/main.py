"""`aws-network-policy-agent`: the node agent, a container of `aws-node` (upstream: `aws-eks-nodeagent`).

Watches this node's pods and every PolicyEndpoint, keeps the `inet vpccni-netpol` table, serves the CNI's
NPBackend calls on `<run dir>/npa.sock`, probes, metrics and introspection (`daemon`). It never deletes its
table on exit: the rules stay in force while it restarts, and established connections are never touched.
With `--enable-network-policy=false` it removes the table and only answers the CNI, with success.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from vpccni.netpol import logs
from vpccni.netpol.agent.lifecycle import npbackend_server, wait_for_signal
from vpccni.netpol.agent.rpc import NpBackendServicer
from vpccni.netpol.agent.tables import NftPolicyTables
from vpccni.netpol.httpserve import HttpServer, text_response
from vpccni.netpol.settings import AgentSettings, SettingsError, load_agent_settings

log = logging.getLogger(__name__)


def run_disabled(settings: AgentSettings, tables: NftPolicyTables) -> int:
    """Network policy off: no table, and every EnforceNpToPod succeeds (upstream's behaviour)."""
    if tables.remove():
        log.info("network policy is disabled: removed the policy table")
    server = npbackend_server(settings, NpBackendServicer(None))
    server.start()
    health = HttpServer(
        settings.health_address,
        {"/healthz": lambda _: text_response("ok\n"), "/readyz": lambda _: text_response("ok\n")},
        name="agent-health",
    ).start()
    wait_for_signal()
    server.stop()
    health.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_agent_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    logs.configure(level=settings.log_level, log_file=settings.log_file)
    tables = NftPolicyTables()
    if not settings.enabled:
        return run_disabled(settings, tables)
    from vpccni.netpol.agent import daemon  # the Kubernetes client, only when enforcing

    return daemon.run(settings, tables)


if __name__ == "__main__":
    sys.exit(main())
