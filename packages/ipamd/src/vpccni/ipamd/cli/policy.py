"""`vpccni policy`: a pod's network policy as this node's agent enforces it, read from the agent's
introspection (`VPCCNI_NETPOL_INTROSPECTION_ADDRESS`, default 127.0.0.1:61680; the agent is a container of
aws-node, so this runs in either container or on the node).

    vpccni policy                                  every local pod: isolated or not, by which policies
    vpccni policy NS/POD                           what the pod lets in and out, and each rule's origin
    vpccni policy NS/POD --from IP [--port 80/TCP] would a new connection from IP get in, and why
    vpccni policy NS/POD --to IP [--port 53/UDP]   would one to IP get out
    vpccni policy --ruleset                        the kernel table itself (nft)

`--from`/`--to` exit 0 when the connection would pass and 1 when it would be dropped.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any, TextIO

from vpccni.ipamd.cli.introspect import IntrospectionSource
from vpccni.ipamd.cli.tables import render_table

DEFAULT_ADDRESS = "127.0.0.1:61680"
AGENT_ADDRESS_ENV = "VPCCNI_NETPOL_INTROSPECTION_ADDRESS"


def add_parser(sub: Any, default_address: str) -> None:
    p = sub.add_parser("policy", help="a pod's network policy, as this node's agent enforces it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("pod", nargs="?", default="", metavar="NAMESPACE/POD")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--from", dest="source", metavar="IP", help="explain a connection from IP to the pod")
    group.add_argument("--to", dest="destination", metavar="IP", help="explain a connection to IP")
    p.add_argument("--port", default="", metavar="PORT/PROTO", help="e.g. 80/TCP (default: no port, as ICMP)")
    p.add_argument("--ruleset", action="store_true", help="print the kernel table")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--agent-address", default=default_address,
                   help=f"the agent's introspection host:port (default {default_address})")  # fmt: skip


def agent_address(env: Mapping[str, str]) -> str:
    return env.get(AGENT_ADDRESS_ENV) or DEFAULT_ADDRESS


def run(args: argparse.Namespace, agent: IntrospectionSource, out: TextIO, err: TextIO) -> int:
    if args.ruleset:
        table = agent.get_json("/v1/ruleset")["table"]
        out.write(table or "(no table: network policy is off, or the agent has not written one yet)\n")
        return 0
    if not args.pod:
        return _all(args, agent, out)
    namespace, _, name = args.pod.partition("/")
    if not name:
        err.write("vpccni policy: name the pod as NAMESPACE/POD\n")
        return 2
    query = {"namespace": namespace, "name": name}
    if args.source or args.destination:
        return _explain(args, agent, query, out, err)
    doc = agent.get_json("/v1/pod?" + urllib.parse.urlencode(query))
    if args.json:
        out.write(json.dumps(doc, indent=1) + "\n")
        return 0
    out.write(f"{namespace}/{name}  veth {doc['veth']}  {', '.join(doc['ips']) or '(no address yet)'}\n")
    out.write(f"selected by: {', '.join(doc['policies']) or 'no policy'}\n")
    for direction, peer in (("ingress", "FROM"), ("egress", "TO")):
        d = doc[direction]
        out.write(f"\n{direction}: {d['isolation']} (kernel: {d.get('kernel', '?')})\n")
        if "allow" in d:
            rows = [(a["cidr"], ",".join(a.get("except", [])) or "-", _ports(a.get("ports")), a["from"])
                    for a in d["allow"]]  # fmt: skip
            headers = (peer, "EXCEPT", "PORTS", "RULE")
            out.write(render_table(headers, rows) if rows else "  nothing is allowed\n")
    return 0


def _ports(ports: Any) -> str:
    if not ports:
        return "all"
    shown = []
    for p in ports:
        span = str(p.get("port", "*"))
        if "endPort" in p:
            span += f"-{p['endPort']}"
        shown.append(f"{span}/{p.get('protocol', 'TCP')}")
    return ",".join(shown)


def _all(args: argparse.Namespace, agent: IntrospectionSource, out: TextIO) -> int:
    pods = agent.get_json("/v1/pods")
    if args.json:
        out.write(json.dumps(pods, indent=1) + "\n")
        return 0
    rows = [(p["namespace"], p["name"], p["ingress"]["isolation"], p["egress"]["isolation"],
             ", ".join(p["policies"]) or "-") for p in pods]  # fmt: skip
    out.write(render_table(("NAMESPACE", "POD", "INGRESS", "EGRESS", "POLICIES"), rows))
    return 0


def _explain(args: argparse.Namespace, agent: IntrospectionSource, query: dict[str, str], out: TextIO,
             err: TextIO) -> int:  # fmt: skip
    direction = "ingress" if args.source else "egress"
    query = {**query, "direction": direction, "peer": args.source or args.destination}
    if args.port:
        number, _, protocol = args.port.partition("/")
        if not number.isdigit():
            err.write(f"vpccni policy: --port {args.port!r} is not PORT/PROTOCOL, e.g. 80/TCP\n")
            return 2
        query.update(port=number, protocol=(protocol or "TCP").upper())
    doc = agent.get_json("/v1/explain?" + urllib.parse.urlencode(query))
    if args.json:
        out.write(json.dumps(doc, indent=1) + "\n")
    else:
        arrow = f"{doc['peer']} -> {doc['pod']}" if args.source else f"{doc['pod']} -> {doc['peer']}"
        what = f" {doc['protocol']}/{doc['port']}" if doc.get("protocol") else ""
        out.write(f"{arrow}{what}: {'ALLOWED' if doc['allowed'] else 'DROPPED'}: {doc['reason']}\n")
    return 0 if doc["allowed"] else 1
