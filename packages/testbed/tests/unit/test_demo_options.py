"""The demo's command line: what each flag sets and which combinations it refuses, with the reason."""

from __future__ import annotations

import pytest
from vpccni.testbed.demo import multinic
from vpccni.testbed.demo.options import DemoOptions, parse_args
from vpccni.testbed.modes import IPV6_CLUSTER_ENV, V6_EGRESS_ENV


def test_the_default_demo() -> None:
    assert parse_args([]) == DemoOptions()
    assert DemoOptions().agent_settings == {} and DemoOptions().egress is None


def test_modes_set_the_agents_environment_and_the_egress_family() -> None:
    ipv6 = parse_args(["--ipv6", "--set", "WARM_PREFIX_TARGET=2"])
    assert ipv6.agent_settings == {**IPV6_CLUSTER_ENV, "WARM_PREFIX_TARGET": "2"} and ipv6.egress == 4
    v6_egress = parse_args(["--v6-egress"])
    assert v6_egress.agent_settings == V6_EGRESS_ENV and v6_egress.egress == 6
    multi = parse_args(["--multi-nic"])
    assert multi.instance_type == multinic.INSTANCE_TYPE and multi.settings == dict(multinic.SETTINGS)
    assert parse_args(["--burst", "--pods", "100"]).workers == 100


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--nodes", "0"], "--nodes and --workers must be at least 1"),
        (["--no-python-host", "--runtime", "containerd"], "not with containerd"),
        (["--security-groups-for-pods", "--keep"], "runs its own two-node scenario"),
        (["--ipv6", "--v6-egress"], "not allowed with argument"),
        (["--multi-nic", "--ipv6"], "primary ENI alone"),
        (["--set", "WARM_IP_TARGET"], "use NAME=VALUE"),
        (["--instance-type", "x9.nothing"], "x9.nothing"),
    ],
)
def test_combinations_it_refuses_say_why(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2 and says in capsys.readouterr().err
