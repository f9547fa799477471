"""egress-cni in ipamd: the host-local store, the plugin's config, the node's rules, the service (ADD prepared
while egress-cni starts, DEL, CHECK, GC) and the conflist entry."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Collection
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import pytest
from vpccni.cniplugin import egress as shim_egress
from vpccni.cniplugin.environ import K8sArgs
from vpccni.cniplugin.errors import CNIError, ErrorCode
from vpccni.cniplugin.wire import Request
from vpccni.ipamd.cni.netns_kind import NetnsKind
from vpccni.ipamd.egress.config import EgressConfig
from vpccni.ipamd.egress.host import wanted_rules
from vpccni.ipamd.egress.hostlocal import EgressAddressesExhausted, HostLocalStore
from vpccni.ipamd.egress.netconf import node_egress_conf, parse_egress_netconf
from vpccni.ipamd.egress.service import EgressService
from vpccni.ipamd.install.conflist import conflist_bytes, render_conflist, with_node_ip
from vpccni.ipamd.install.entrypoint import Entrypoint, EntrypointConfig
from vpccni.ipamd.plan import WiringPlan
from vpccni.ipamd.settings import load_settings
from vpccni.networkutils.pod import PodInterface, WiredPod

V4_RANGE = IPv4Network("169.254.172.0/22")
IPV6_ENV = {
    "ENABLE_IPv6": "true",
    "ENABLE_IPv4": "false",
    "ENABLE_PREFIX_DELEGATION": "true",
    "WARM_PREFIX_TARGET": "1",
}


# --- host-local store ---------------------------------------------------------------------------------------


def test_store_hands_out_round_robin_after_the_gateway_in_host_locals_files(tmp_path: Path) -> None:
    store = HostLocalStore(data_dir=str(tmp_path), network="aws-cni", subnet=V4_RANGE)
    first = store.reserve("c1", "eth0")
    assert first == IPv4Address("169.254.172.2") and store.gateway == IPv4Address("169.254.172.1")
    assert store.reserve("c1", "eth0") == first, "the attachment keeps its address"
    second = store.reserve("c2", "eth0")
    assert second == IPv4Address("169.254.172.3")
    directory = tmp_path / "aws-cni"
    assert (directory / "169.254.172.2").read_bytes() == b"c1\r\neth0"
    assert (directory / "last_reserved_ip.0").read_text() == "169.254.172.3"
    assert store.release("c1", "eth0") == first and store.release("c1", "eth0") is None
    assert store.reserve("c3", "eth0") == IPv4Address("169.254.172.4"), "round robin, not lowest first"
    # Another process (an upstream host-local) wrote one; a new store reads every file back.
    (directory / "169.254.172.9").write_bytes(b"c9")  # host-local before v0.9: the id alone
    again = HostLocalStore(data_dir=str(tmp_path), network="aws-cni", subnet=V4_RANGE)
    assert again.lookup("c9", "eth0") == IPv4Address("169.254.172.9")
    assert set(again.reservations()) == {second, IPv4Address("169.254.172.4"), IPv4Address("169.254.172.9")}


def test_store_wraps_and_then_runs_out(tmp_path: Path) -> None:
    store = HostLocalStore(data_dir=str(tmp_path), network="n", subnet=IPv6Network("fd00::ac:0/126"))
    got = [store.reserve(f"c{i}", "eth0") for i in range(2)]  # ::1 is the gateway: ::2 and ::3
    assert got == [IPv6Address("fd00::ac:2"), IPv6Address("fd00::ac:3")]
    with pytest.raises(EgressAddressesExhausted, match="all 2 egress addresses"):
        store.reserve("c9", "eth0")
    store.release("c0", "eth0")
    assert store.reserve("c9", "eth0") == IPv6Address("fd00::ac:2")


# --- config, node rules ---------------------------------------------------------------------------------


def _conf(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "cniVersion": "0.4.0", "name": "aws-cni", "type": "egress-cni", "mtu": "9001", "enabled": "true",
        "randomizeSNAT": "prng", "nodeIP": "10.0.0.5",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "169.254.172.0/22"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/tmp/x"},
    }  # fmt: skip
    raw.update(over)
    return raw


def test_the_plugin_config_is_read_as_upstreams() -> None:
    conf = parse_egress_netconf(_conf())
    assert (conf.enabled, conf.family, conf.subnet, conf.data_dir, conf.network) == (
        True, 4, V4_RANGE, "/tmp/x", "aws-cni",
    )  # fmt: skip
    six = parse_egress_netconf(
        _conf(nodeIP="2001:db8::5", ipam={"ranges": [[{"subnet": "fd00::ac:00/118"}]]})
    )
    assert six.family == 6 and six.subnet == IPv6Network("fd00::ac:0/118")
    assert not parse_egress_netconf(_conf(enabled="false")).enabled
    with pytest.raises(CNIError) as err:
        parse_egress_netconf(_conf(nodeIP="nope"))
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG


def test_node_rules_follow_the_cluster_family() -> None:
    def config(**kw: Any) -> EgressConfig:
        base = dict(ipv6_cluster=True, v4_egress=True, v6_egress=False, v4_log_file="a", v6_log_file="b",
                    log_level="DEBUG", randomize_snat="prng", mtu=9001)  # fmt: skip
        return EgressConfig.for_cluster(**{**base, **kw})

    node4, node6 = IPv4Address("10.0.0.5"), IPv6Address("2001:db8::5")
    (rules,) = wanted_rules(config(), ipv6_cluster=True, node_ipv4=node4, node_ipv6=node6)
    assert (rules.family, rules.node_ip, rules.block_forwarding) == (4, node4, True)
    (off,) = wanted_rules(config(v4_egress=False), ipv6_cluster=True, node_ipv4=node4, node_ipv6=node6)
    assert off.node_ip is None and off.block_forwarding, "the reject stays in IPv6 mode, as upstream"
    v6 = config(ipv6_cluster=False, v6_egress=True)
    assert wanted_rules(v6, ipv6_cluster=False, node_ipv4=node4, node_ipv6=node6)[0].family == 6
    assert wanted_rules(v6, ipv6_cluster=False, node_ipv4=node4, node_ipv6=None) == []
    assert (
        wanted_rules(config(ipv6_cluster=False), ipv6_cluster=False, node_ipv4=node4, node_ipv6=node6) == []
    )
    assert node_egress_conf(v6, node_ipv4=node4, node_ipv6=IPv6Address("fe80::1")) is None


# --- the service ------------------------------------------------------------------------------------------


class FakeWiring:
    def __init__(self) -> None:
        self.wired: dict[str, PodInterface] = {}
        self.sysctls: list[tuple[str, str]] = []
        self.unwired: list[tuple[str, bool, tuple[str, ...]]] = []  # host veth, keep_veth, siblings
        self.fail = False
        self.lock = threading.Lock()

    def wire(self, netns_fd: int, spec: PodInterface) -> WiredPod:
        if self.fail:
            raise RuntimeError("veth exists")
        with self.lock:
            self.wired[spec.host_veth] = spec
        return WiredPod(host_veth=spec.host_veth, host_mac="02:00:00:00:00:01", ifname=spec.ifname,
                        container_mac="02:00:00:00:00:02", ip=spec.ip, gateway=spec.gateway)  # fmt: skip

    def unwire(
        self, spec: PodInterface, netns_fd: int | None = None, *, keep_veth: bool = False,
        siblings: Collection[str] = (),
    ) -> None:  # fmt: skip
        with self.lock:
            self.wired.pop(spec.host_veth, None)
            self.unwired.append((spec.host_veth, keep_veth, tuple(siblings)))

    def verify(self, netns_fd: int, spec: PodInterface) -> list[str]:
        return [] if spec.host_veth in self.wired else ["veth missing"]

    def set_pod_sysctl(self, netns_fd: int, key: str, value: str) -> None:
        self.sysctls.append((key, value))


def _request(command: str, conf: dict[str, Any], container: str = "c1") -> Request:
    return Request(
        version="0", command=command, container_id=container, ifname="eth0", netns_path="/run/netns/p",
        has_netns_fd=True, k8s_args=K8sArgs(pod_namespace="ns", pod_name="p"), netconf=conf,
        cni_version=conf.get("cniVersion", "0.4.0"), timeout_s=10,
    )  # fmt: skip


PREV = {"cniVersion": "0.4.0", "interfaces": [{"name": "eni1"}, {"name": "eth0", "sandbox": "/run/netns/p"}],
        "ips": [{"version": "6", "address": "2001:db8::1/128", "interface": 1}]}  # fmt: skip


@pytest.fixture
def netns_fd() -> Any:
    fd = os.open("/dev/null", os.O_RDONLY)
    yield fd
    os.close(fd)


def _service(tmp_path: Path, wiring: FakeWiring, *, prepared: bool) -> EgressService:
    node = parse_egress_netconf(_conf(ipam={"ranges": [[{"subnet": "169.254.172.0/22"}]],
                                           "dataDir": str(tmp_path)}))  # fmt: skip
    return EgressService(
        wiring=wiring,  # type: ignore[arg-type]
        node_conf=node if prepared else None,
        classify=lambda fd: NetnsKind.POD,
    )


@pytest.mark.parametrize("with_aws_cni", [False, True])
def test_add_appends_the_egress_interfaces_and_del_undoes_it(
    tmp_path: Path, netns_fd: int, with_aws_cni: bool
) -> None:
    """With egress on in the settings, aws-cni's ADD wires it and lists it, and egress-cni answers with its
    prevResult alone (the shim's side); else egress-cni's call wires it here. The same either way."""
    wiring = FakeWiring()
    service = _service(tmp_path, wiring, prepared=with_aws_cni)
    conf = _conf(
        prevResult=PREV, ipam={"ranges": [[{"subnet": "169.254.172.0/22"}]], "dataDir": str(tmp_path)}
    )
    aws_cni = _request("ADD", {"cniVersion": "0.4.0", "name": "aws-cni", "type": "aws-cni"})
    listed = service.add_with_pod(aws_cni, netns_fd, "0.4.0")  # what aws-cni's ADD does before answering
    assert len(listed) == (2 if with_aws_cni else 0)
    conf["prevResult"] = {**PREV, "interfaces": [*PREV["interfaces"], *listed]}
    answered_by_shim = shim_egress.wired_result(conf, "0.4.0")
    result = service.handle(_request("ADD", conf), netns_fd)
    assert answered_by_shim == (conf["prevResult"] if with_aws_cni else None)
    assert isinstance(result, dict) and result["ips"] == PREV["ips"]
    names = [i["name"] for i in result["interfaces"]]
    assert names[:2] == ["eni1", "eth0"] and names[2].startswith("egr") and names[3] == "v4if0"
    assert result["interfaces"][3]["sandbox"] == "/run/netns/p" and len(names) == 4
    (spec,) = wiring.wired.values()
    assert spec.ip == IPv4Address("169.254.172.2") and spec.gateway == IPv4Address("169.254.172.1")
    assert service.handle(_request("CHECK", conf), netns_fd) is None
    service.handle(_request("DEL", conf), netns_fd)
    # The veth goes with the pod's namespace: aws-cni's eth0, which the chain's DEL removes next, is no
    # interface that would keep the namespace alive.
    assert wiring.unwired == [(spec.host_veth, True, ("eth0",))]
    service.handle(_request("DEL", conf), netns_fd)  # idempotent
    assert wiring.wired == {} and not [p for p in (tmp_path / "aws-cni").iterdir() if p.name[0].isdigit()]


def test_an_entry_turned_off_undoes_what_aws_cnis_add_wired(tmp_path: Path, netns_fd: int) -> None:
    wiring = FakeWiring()
    service = _service(tmp_path, wiring, prepared=True)
    listed = service.add_with_pod(_request("ADD", {"name": "aws-cni"}), netns_fd, "0.4.0")
    conf = _conf(enabled="false", prevResult={**PREV, "interfaces": [*PREV["interfaces"], *listed]})
    assert shim_egress.wired_result(conf, "0.4.0") is None, "the shim leaves it to ipamd"
    result = service.handle(_request("ADD", conf), netns_fd)
    assert result == {**PREV, "dns": {}}, "its interfaces left out"
    (host_veth, keep_veth, _) = wiring.unwired[0]
    assert wiring.wired == {} and host_veth == listed[0]["name"] and not keep_veth, "the pod lives on"
    assert not [p for p in (tmp_path / "aws-cni").iterdir() if p.name[0].isdigit()], "the address went back"


def test_aws_cnis_add_leaves_egress_to_egress_cni_when_it_cannot_list_it(
    tmp_path: Path, netns_fd: int
) -> None:
    wiring = FakeWiring()
    service = _service(tmp_path, wiring, prepared=True)
    aws_cni = _request("ADD", {"name": "aws-cni"})
    assert service.add_with_pod(aws_cni, netns_fd, "0.2.0") == [] and wiring.wired == {}, "no interfaces"
    wiring.fail = True
    assert service.add_with_pod(aws_cni, netns_fd, "1.0.0") == [], "a failure is egress-cni's to report"
    conf = _conf(
        prevResult=PREV, ipam={"ranges": [[{"subnet": "169.254.172.0/22"}]], "dataDir": str(tmp_path)}
    )
    with pytest.raises(CNIError) as err:
        service.handle(_request("ADD", conf), netns_fd)
    assert err.value.code == ErrorCode.INTERNAL and "egress" in err.value.msg
    assert not [p for p in (tmp_path / "aws-cni").iterdir() if p.name[0].isdigit()], "nothing held"


def test_disabled_passes_the_result_through_and_errors_are_cni_errors(tmp_path: Path, netns_fd: int) -> None:
    wiring = FakeWiring()
    service = _service(tmp_path, wiring, prepared=False)
    result = service.handle(_request("ADD", _conf(enabled="false", prevResult=PREV)), netns_fd)
    assert result == {**PREV, "dns": {}} and wiring.wired == {}
    with pytest.raises(CNIError) as err:
        service.handle(_request("ADD", _conf()), netns_fd)
    assert err.value.code == ErrorCode.INVALID_NETWORK_CONFIG and "chained" in err.value.msg
    wiring.fail = True
    conf = _conf(
        prevResult=PREV, ipam={"ranges": [[{"subnet": "169.254.172.0/22"}]], "dataDir": str(tmp_path)}
    )
    with pytest.raises(CNIError) as err:
        service.handle(_request("ADD", conf), netns_fd)
    assert err.value.code == ErrorCode.INTERNAL
    assert not [p for p in (tmp_path / "aws-cni").iterdir() if p.name[0].isdigit()], "the address went back"
    v6 = _conf(prevResult=PREV, nodeIP="fe80::1", ipam={"ranges": [[{"subnet": "fd00::ac:00/118"}]]})
    with pytest.raises(CNIError, match="global IPv6"):
        service.handle(_request("ADD", v6), netns_fd)


def test_ipv6_egress_turns_ipv6_off_on_the_pods_interface(tmp_path: Path, netns_fd: int) -> None:
    wiring = FakeWiring()
    service = _service(tmp_path, wiring, prepared=False)
    conf = _conf(prevResult=PREV, nodeIP="2001:db8::5",
                 ipam={"ranges": [[{"subnet": "fd00::ac:00/118"}]], "dataDir": str(tmp_path)})  # fmt: skip
    result = service.handle(_request("ADD", conf), netns_fd)
    assert isinstance(result, dict) and result["interfaces"][3]["name"] == "v6if0"
    assert wiring.sysctls == [("net/ipv6/conf/eth0/disable_ipv6", "1")]
    (spec,) = wiring.wired.values()
    assert spec.ip == IPv6Address("fd00::ac:2") and spec.gateway == IPv6Address("fe80::1")


def test_gc_releases_the_addresses_of_attachments_gone(tmp_path: Path, netns_fd: int) -> None:
    service = _service(tmp_path, FakeWiring(), prepared=False)
    conf = _conf(
        prevResult=PREV, ipam={"ranges": [[{"subnet": "169.254.172.0/22"}]], "dataDir": str(tmp_path)}
    )
    for container in ("keep", "gone"):
        service.handle(_request("ADD", conf, container), netns_fd)
    gc = dict(
        conf, cniVersion="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    )
    service.handle(_request("GC", gc), None)
    left = sorted(p.name for p in (tmp_path / "aws-cni").iterdir() if p.name[0].isdigit())
    assert left == ["169.254.172.2"]


# --- conflist ----------------------------------------------------------------------------------------------


def _options(env: dict[str, str]) -> Any:
    return WiringPlan.from_settings(load_settings(env)).install.conflist


def test_an_ipv6_cluster_chains_egress_cni_as_upstream_writes_it() -> None:
    options = with_node_ip(_options(IPV6_ENV), ipv4="10.0.0.5", ipv6="2001:db8::5")
    plugins = render_conflist(options)["plugins"]
    assert [p["type"] for p in plugins] == ["aws-cni", "egress-cni", "portmap"]
    egress = plugins[1]
    assert list(egress) == ["name", "type", "mtu", "enabled", "randomizeSNAT", "nodeIP", "ipam",
                            "pluginLogFile", "pluginLogLevel"]  # fmt: skip
    assert egress["ipam"] == {
        "type": "host-local", "ranges": [[{"subnet": "169.254.172.0/22"}]], "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/run/cni/v6pd/egress-v4-ipam",
    }  # fmt: skip
    assert (egress["enabled"], egress["nodeIP"], egress["mtu"]) == ("true", "10.0.0.5", "9001")
    assert egress["pluginLogFile"] == "/var/log/aws-routed-eni/egress-v4-plugin.log"


def test_egress_cni_is_left_out_when_off() -> None:
    for env in ({}, {**IPV6_ENV, "ENABLE_V4_EGRESS": "false"}):
        options = with_node_ip(_options(env), ipv4="10.0.0.5", ipv6="")
        assert [p["type"] for p in render_conflist(options)["plugins"]] == ["aws-cni", "portmap"]
    v6 = _options({"ENABLE_V6_EGRESS": "true"})
    assert len(render_conflist(with_node_ip(v6, ipv4="10.0.0.5", ipv6=""))["plugins"]) == 2
    with_v6 = render_conflist(with_node_ip(v6, ipv4="10.0.0.5", ipv6="2001:db8::5"))["plugins"][1]
    assert with_v6["nodeIP"] == "2001:db8::5" and with_v6["ipam"]["routes"] == [{"dst": "::/0"}]
    assert with_v6["ipam"]["dataDir"] == "/run/cni/v4pd/egress-v6-ipam"


def test_the_entrypoint_fills_the_node_ip_from_imds(tmp_path: Path) -> None:
    plan = WiringPlan.from_settings(load_settings(IPV6_ENV))
    entry = Entrypoint(
        config=EntrypointConfig(app_dir=tmp_path), plan=plan, environ={},
        health_check=lambda: None,  # type: ignore[arg-type,return-value]
        node_ips=lambda: ("10.0.0.7", ""),
    )  # fmt: skip
    written = json.loads(conflist_bytes(entry._conflist_options()))
    assert written["plugins"][1]["nodeIP"] == "10.0.0.7"
    options = replace(plan.install.conflist, cni_socket="/tmp/run/cni.sock")
    egress = render_conflist(with_node_ip(options, ipv4="10.0.0.7", ipv6=""))["plugins"][1]
    assert egress["cniSocket"] == "/tmp/run/cni.sock", "the shim under another type needs it too"
