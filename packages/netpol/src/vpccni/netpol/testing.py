"""Stateful fakes of the agent's and controller's side effects, for tests (product code never imports this).

- `FakePolicyTables`: the kernel table as the last `Ruleset` written, with the same incremental strict
  admission as the real one.
- `FakeConntrack`: remembers which addresses were forgotten.
- `FakePolicyEndpointWriter`: an in-memory PolicyEndpoint store with resourceVersions, the API's 409 and 404,
  and injectable outages.
- `FakeLeaseStore`: one Lease with resourceVersions, the API's 409, and injectable outages, shared by the
  electors of several simulated replicas.
- `introspection_of`: an agent's introspection over pods and PolicyEndpoints given outright.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any

from vpccni.k8sapi.errors import ApiUnavailable, Conflict, NotFound
from vpccni.netpol.agent.effective import LocalPod, effective_policy
from vpccni.netpol.agent.introspect import Introspection
from vpccni.netpol.agent.ruleset import DROP, Ruleset, build_ruleset, render
from vpccni.netpol.controller.leader import LeaseRecord
from vpccni.netpol.model import PolicyEndpoint


class FakePolicyTables:
    def __init__(self, *, ruleset: Ruleset | None = None) -> None:
        self.ruleset = ruleset
        self.writes = 0
        self.fail_with: Exception | None = None

    def apply(self, ruleset: Ruleset) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.ruleset = ruleset
        self.writes += 1

    def add_strict_pod(self, veth: str) -> None:
        current = self.ruleset or Ruleset()
        self.ruleset = Ruleset(
            chains=current.chains,
            chain_direction=current.chain_direction,
            ingress={veth: DROP, **current.ingress},
            egress={veth: DROP, **current.egress},
            strict_pods=current.strict_pods | {veth},
        )

    def strict_pods(self) -> frozenset[str] | None:
        return None if self.ruleset is None else self.ruleset.strict_pods

    def listing(self) -> str:
        return "" if self.ruleset is None else render(self.ruleset)

    def remove(self) -> bool:
        had, self.ruleset = self.ruleset is not None, None
        return had


class FakeInterfaces:
    """Pod address -> host interface, as a test sets it."""

    def __init__(self, routes: dict[str, str] | None = None) -> None:
        self.routes = dict(routes or {})

    def by_address(self) -> dict[str, str]:
        return dict(self.routes)


class FakeConntrack:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget(self, address: str) -> int:
        self.forgotten.append(address)
        return 1


class FakePolicyEndpointWriter:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.unavailable = False
        self._rv = itertools.count(100)

    def _check(self, verb: str, namespace: str, name: str) -> None:
        self.calls.append((verb, namespace, name))
        if self.unavailable:
            raise ApiUnavailable(f"{verb} PolicyEndpoint {namespace}/{name}: the API server is unavailable")

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self._check("create", namespace, name)
        if (namespace, name) in self.objects:
            raise Conflict(f"create PolicyEndpoint {namespace}/{name}: already exists", status=409)
        obj = copy.deepcopy(body)
        obj["metadata"].update(namespace=namespace, resourceVersion=str(next(self._rv)))
        self.objects[(namespace, name)] = obj
        return copy.deepcopy(obj)

    def replace_spec(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        self._check("replace", namespace, name)
        obj = self.objects.get((namespace, name))
        if obj is None:
            raise NotFound(f"patch PolicyEndpoint {namespace}/{name}: not found", status=404)
        obj["spec"] = copy.deepcopy(spec)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(obj)

    def delete(self, namespace: str, name: str) -> None:
        self._check("delete", namespace, name)
        if self.objects.pop((namespace, name), None) is None:
            raise NotFound(f"delete PolicyEndpoint {namespace}/{name}: not found", status=404)


def introspection_of(pods: list[LocalPod], policy_endpoints: list[PolicyEndpoint]) -> Introspection:
    """What an agent with these local pods and PolicyEndpoints (standard mode) shows."""
    policies = [effective_policy(p, policy_endpoints, strict=False) for p in pods]
    ruleset = build_ruleset(policies)
    by_key = {(p.pod.namespace, p.pod.name): p for p in policies}
    return Introspection(
        policies=lambda: policies,
        ruleset=lambda: ruleset,
        policy_of=lambda namespace, name: by_key.get((namespace, name)),
        listing=lambda: f"table inet vpccni-netpol {{\n{render(ruleset)}}}\n",
    )


class FakeLeaseStore:
    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.outage = False
        self._versions = itertools.count(1)

    def get(self) -> LeaseRecord | None:
        self._check()
        return self.record

    def create(self, record: LeaseRecord) -> bool:
        self._check()
        if self.record is not None:
            return False
        self.record = dataclasses.replace(record, resource_version=str(next(self._versions)))
        return True

    def update(self, record: LeaseRecord) -> bool:
        self._check()
        if self.record is None or record.resource_version != self.record.resource_version:
            return False
        self.record = dataclasses.replace(record, resource_version=str(next(self._versions)))
        return True

    def _check(self) -> None:
        if self.outage:
            raise ApiUnavailable("read Lease: cannot reach the Kubernetes API server (simulated)")
