"""`vpccni policy` against the agent's real introspection server (an agent's view, computed by the agent's
own code), with the CLI's real HTTP client."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from vpccni.ipamd.cli.introspect import HttpIntrospection
from vpccni.ipamd.cli.main import CliDeps, run
from vpccni.ipamd.cli.testing import FakeEc2, FakeHost, FakeHttp
from vpccni.netpol import policyendpoint
from vpccni.netpol.agent.effective import LocalPod
from vpccni.netpol.httpserve import HttpServer
from vpccni.netpol.testing import introspection_of

PE = policyendpoint.from_json(
    {
        "metadata": {"namespace": "shop", "name": "api-1a2b3", "resourceVersion": "4"},
        "spec": {
            "policyRef": {"name": "api", "namespace": "shop"},
            "podSelector": {"matchLabels": {"app": "api"}},
            "podIsolation": ["Ingress"],
            "ingress": [
                {"cidr": "10.0.0.20", "ports": [{"protocol": "TCP", "port": 8080}]},
                {
                    "cidr": "10.1.0.0/16",
                    "except": ["10.1.2.0/24"],
                    "ports": [{"protocol": "UDP", "port": 53, "endPort": 54}],
                },
            ],
        },
    }
)
PODS = [
    LocalPod(namespace="shop", name="api-0", labels={"app": "api"}, veth="eni0000000000a", ips=("10.0.0.5",)),
    LocalPod(namespace="shop", name="web-0", labels={"app": "web"}, veth="eni0000000000b", ips=("10.0.0.6",)),
]


@pytest.fixture
def agent() -> Iterator[str]:
    view = introspection_of(PODS, [PE])
    server = HttpServer("127.0.0.1:0", view.routes(), name="test-agent").start()
    yield f"127.0.0.1:{server.port}"
    server.stop()


def cli(*argv: str, address: str) -> tuple[int, str, str]:
    deps = CliDeps(
        introspection_at=HttpIntrospection,
        host=FakeHost(env={"VPCCNI_NETPOL_INTROSPECTION_ADDRESS": address}),
        http=FakeHttp(),
        ec2_for_region=lambda region: FakeEc2(),
    )
    out, err = io.StringIO(), io.StringIO()
    return run(["policy", *argv], deps=deps, out=out, err=err), out.getvalue(), err.getvalue()


def test_every_local_pod_and_its_isolation(agent: str) -> None:
    code, out, _ = cli(address=agent)
    assert code == 0
    assert out.splitlines() == [
        "NAMESPACE  POD    INGRESS  EGRESS  POLICIES",
        "shop       api-0  policy   open    shop/api",
        "shop       web-0  open     open    -",
    ]


def test_one_pods_rules_with_their_origin(agent: str) -> None:
    code, out, _ = cli("shop/api-0", address=agent)
    assert code == 0
    assert "selected by: shop/api" in out
    assert "10.0.0.20    -            8080/TCP   shop/api (api-1a2b3 ingress[0])" in out
    assert "10.1.0.0/16  10.1.2.0/24  53-54/UDP  shop/api (api-1a2b3 ingress[1])" in out
    assert "egress: open" in out


def test_explain_says_which_rule_decides_and_exits_by_the_verdict(agent: str) -> None:
    code, out, _ = cli("shop/api-0", "--from", "10.0.0.20", "--port", "8080/tcp", address=agent)
    assert (
        code == 0
        and "10.0.0.20 -> shop/api-0 TCP/8080: ALLOWED: allowed by shop/api (api-1a2b3 ingress[0])" in out
    )
    code, out, _ = cli("shop/api-0", "--from", "10.1.2.9", "--port", "53/UDP", address=agent)
    assert code == 1 and "DROPPED: no rule of the policies that isolate the pod allows it" in out
    code, out, _ = cli("shop/web-0", "--to", "8.8.8.8", address=agent)
    assert code == 0 and "no policy isolates the pod" in out


def test_the_kernel_table_and_bad_input(agent: str) -> None:
    code, out, _ = cli("--ruleset", address=agent)
    assert code == 0 and out.startswith("table inet vpccni-netpol {") and '"eni0000000000a"' in out
    assert cli("shop", address=agent)[0] == 2
    assert cli("shop/api-0", "--from", "10.0.0.1", "--port", "http", address=agent)[0] == 2
    code, _, err = cli("shop/nope", address=agent)
    assert code == 1 and "not a pod of this node" in err
    code, _, err = cli(address="127.0.0.1:1")
    assert code == 1 and "vpccni:" in err
