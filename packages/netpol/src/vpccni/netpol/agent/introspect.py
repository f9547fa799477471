"""The agent's introspection (JSON over HTTP on `VPCCNI_NETPOL_INTROSPECTION_ADDRESS`), which `vpccni
policy` reads:

    GET /v1/pods                                   every local pod: isolation per direction, policies
    GET /v1/pod?namespace=N&name=P                 one pod's effective policy: allowed peers, their origin
    GET /v1/explain?namespace=N&name=P&direction=ingress&peer=IP[&protocol=TCP&port=80]
                                                   would a new connection pass, and which rule decides
    GET /v1/ruleset                                {"table": `nft list table inet vpccni-netpol`}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any

from vpccni.netpol.agent.effective import Decision, DirectionPolicy, Isolation, PodPolicy
from vpccni.netpol.agent.ruleset import Ruleset
from vpccni.netpol.httpserve import Response, Route, json_response
from vpccni.netpol.model import Direction, Protocol
from vpccni.netpol.policyendpoint import endpoint_json


def _direction_json(policy: PodPolicy, direction: Direction, ruleset: Ruleset | None) -> dict[str, Any]:
    d = policy.direction(direction)
    out: dict[str, Any] = {"isolation": d.isolation.value}
    if ruleset is not None:
        out["kernel"] = ruleset.verdict(direction, policy.pod.veth) or "no entry (open)"
    if d.isolated:
        out["allow"] = [{**endpoint_json(r.endpoint), "from": r.origin(direction)} for r in d.rules]
    return out


def pod_json(policy: PodPolicy, ruleset: Ruleset | None) -> dict[str, Any]:
    return {
        "namespace": policy.pod.namespace,
        "name": policy.pod.name,
        "veth": policy.pod.veth,
        "ips": list(policy.pod.ips),
        "policies": [str(p) for p in policy.policies],
        "ingress": _direction_json(policy, Direction.INGRESS, ruleset),
        "egress": _direction_json(policy, Direction.EGRESS, ruleset),
    }


def decision_json(d: DirectionPolicy, decision: Decision, direction: Direction) -> dict[str, Any]:
    if not d.isolated:
        reason = f"no policy isolates the pod for {direction.value.lower()}"
    elif decision.rule is not None:
        reason = f"allowed by {decision.rule.origin(direction)}"
    elif d.isolation is Isolation.STRICT_DEFAULT:
        reason = "strict mode: no policy selects the pod yet, so it is denied both ways"
    else:
        reason = "no rule of the policies that isolate the pod allows it"
    out: dict[str, Any] = {"allowed": decision.allowed, "reason": reason}
    if decision.rule is not None:
        out["rule"] = endpoint_json(decision.rule.endpoint)
    return out


class Introspection:
    def __init__(
        self,
        *,
        policies: Callable[[], list[PodPolicy]],
        ruleset: Callable[[], Ruleset | None],
        policy_of: Callable[[str, str], PodPolicy | None],
        listing: Callable[[], str],
    ) -> None:
        self._policies = policies
        self._ruleset = ruleset
        self._policy_of = policy_of
        self._listing = listing

    def routes(self) -> dict[str, Route]:
        return {
            "/v1/pods": self.pods,
            "/v1/pod": self.pod,
            "/v1/explain": self.explain,
            "/v1/ruleset": lambda _: json_response({"table": self._listing()}),
        }

    def pods(self, query: Mapping[str, str]) -> Response:
        ruleset = self._ruleset()
        return json_response([pod_json(p, ruleset) for p in self._policies()])

    def _find(self, query: Mapping[str, str]) -> PodPolicy | Response:
        namespace, name = query.get("namespace", ""), query.get("name", "")
        if not namespace or not name:
            return json_response({"error": "give namespace= and name="}, 400)
        policy = self._policy_of(namespace, name)
        if policy is None:
            return json_response(
                {"error": f"pod {namespace}/{name} is not a pod of this node the agent knows "
                          "(host-network pods and pods of other nodes have no policy here)"},
                404,
            )  # fmt: skip
        return policy

    def pod(self, query: Mapping[str, str]) -> Response:
        found = self._find(query)
        return found if isinstance(found, tuple) else json_response(pod_json(found, self._ruleset()))

    def explain(self, query: Mapping[str, str]) -> Response:
        found = self._find(query)
        if isinstance(found, tuple):
            return found
        try:
            direction = Direction(query.get("direction", "ingress").capitalize())
            peer = ipaddress.ip_address(query.get("peer", ""))
            proto_name = query.get("protocol", "")
            protocol = Protocol[proto_name.upper()] if proto_name else None
            port = int(query["port"]) if query.get("port") else None
        except (ValueError, KeyError) as exc:
            return json_response(
                {
                    "error": f"bad query ({exc}): direction=ingress|egress peer=IP "
                    "[protocol=TCP|UDP|SCTP port=N]"
                },
                400,
            )
        d = found.direction(direction)
        decision = d.decide(peer, protocol, port if protocol is not None else None)
        return json_response(
            {"pod": f"{found.pod.namespace}/{found.pod.name}", "direction": direction.value.lower(),
             "peer": str(peer), "protocol": protocol.name if protocol else None, "port": port,
             **decision_json(d, decision, direction)}
        )  # fmt: skip
