"""CNI_* variables and CNI_ARGS."""

from __future__ import annotations

import pytest
from vpccni.cniplugin.environ import K8sArgs, parse_cni_args, read_environment
from vpccni.cniplugin.errors import CNIError, ErrorCode

ADD_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "abc123",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
}


def _code(env: dict[str, str]) -> tuple[int, str]:
    with pytest.raises(CNIError) as info:
        read_environment(env)
    return info.value.code, info.value.msg


def test_kubelet_style_args() -> None:
    args = parse_cni_args(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;"
        "K8S_POD_UID=0b9c;EXTRA=1"
    )
    assert args == K8sArgs(
        pod_name="web-0", pod_namespace="default", pod_infra_container_id="abc", pod_uid="0b9c"
    )


def test_full_add_environment() -> None:
    env = read_environment(
        {**ADD_ENV, "CNI_ARGS": "K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns", "CNI_PATH": "/opt/cni/bin"}
    )
    assert (env.command, env.container_id, env.netns, env.ifname, env.path) == (
        "ADD", "abc123", "/var/run/netns/x", "eth0", "/opt/cni/bin",
    )  # fmt: skip
    assert env.args.pod_name == "p"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "CNI_COMMAND"),
        ({"CNI_COMMAND": "FROB"}, "CNI_COMMAND"),
        ({**ADD_ENV, "CNI_NETNS": ""}, "CNI_NETNS"),
        ({k: v for k, v in ADD_ENV.items() if k != "CNI_CONTAINERID"}, "CNI_CONTAINERID"),
        ({**ADD_ENV, "CNI_CONTAINERID": "-bad"}, "CNI_CONTAINERID"),
        ({**ADD_ENV, "CNI_CONTAINERID": "a/b"}, "CNI_CONTAINERID"),
        ({**ADD_ENV, "CNI_CONTAINERID": "a" * 2000}, "CNI_CONTAINERID"),
        ({**ADD_ENV, "CNI_IFNAME": "a-very-long-ifname0"}, "CNI_IFNAME"),
        ({**ADD_ENV, "CNI_IFNAME": "eth:0"}, "CNI_IFNAME"),
        ({**ADD_ENV, "CNI_IFNAME": ".."}, "CNI_IFNAME"),
        ({**ADD_ENV, "CNI_NETNS": "relative/path"}, "CNI_NETNS"),
        ({**ADD_ENV, "CNI_NETNS": "/x" * 3000}, "CNI_NETNS"),
        ({**ADD_ENV, "CNI_ARGS": "novalue"}, "CNI_ARGS"),
        ({**ADD_ENV, "CNI_ARGS": "=x"}, "CNI_ARGS"),
        ({**ADD_ENV, "CNI_ARGS": "UNKNOWN=1"}, "CNI_ARGS"),
        ({**ADD_ENV, "CNI_ARGS": "IgnoreUnknown=maybe"}, "CNI_ARGS"),
        ({**ADD_ENV, "CNI_ARGS": "K8S_POD_NAME=" + "p" * 300}, "CNI_ARGS"),
        ({**ADD_ENV, "CNI_ARGS": "K8S_POD_NAME=a\nb"}, "CNI_ARGS"),
        ({**ADD_ENV, "CNI_ARGS": "X=" * 3000}, "CNI_ARGS"),
    ],
)
def test_invalid_environment_is_code_4_and_names_the_variable(env: dict[str, str], named: str) -> None:
    code, msg = _code(env)
    assert code == ErrorCode.INVALID_ENVIRONMENT_VARIABLES
    assert named in msg


def test_del_does_not_need_a_netns_and_status_needs_nothing() -> None:
    env = read_environment({"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c", "CNI_IFNAME": "eth0"})
    assert env.netns == ""
    assert read_environment({"CNI_COMMAND": "STATUS"}).command == "STATUS"
    assert read_environment({"CNI_COMMAND": "GC"}).command == "GC"


def test_values_are_immutable() -> None:
    args = K8sArgs(pod_name="p")
    with pytest.raises(AttributeError):
        args.pod_name = "q"  # type: ignore[misc]
    with pytest.raises(TypeError):
        K8sArgs("p")  # type: ignore[misc]
