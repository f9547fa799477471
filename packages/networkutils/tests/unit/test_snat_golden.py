"""Golden lists of the exact iptables rules per mode (docs/design/upstream-contract.md §4)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from vpccni.networkutils.config import ConnmarkBackend, HostNetworkConfig, SnatRandomization
from vpccni.networkutils.nft import connmark_table_body
from vpccni.networkutils.snat import desired_tables

BASE = HostNetworkConfig(
    node_ip=IPv4Address("10.0.0.5"),
    primary_mac="0a:00:00:00:00:01",
    vpc_cidrs=(IPv4Network("10.0.0.0/16"), IPv4Network("100.64.0.0/16")),
)


def render(config: HostNetworkConfig, backend: ConnmarkBackend = ConnmarkBackend.IPTABLES) -> list[str]:
    lines = []
    for table in desired_tables(config, backend, "ens5"):
        for chain, rules in table.builtin.items():
            lines += [f"{table.name} -A {chain} {rule}" for rule in rules]
        for chain, rules in table.chains.items():
            lines += [f"{table.name} -A {chain} {rule}" for rule in rules]
    return lines


SNAT_JUMP = 'nat -A POSTROUTING -m comment --comment "AWS SNAT CHAIN" -j AWS-SNAT-CHAIN-0'
CONNMARK_JUMPS = [
    'nat -A PREROUTING -i eni+ -m comment --comment "AWS, outbound connections" -j AWS-CONNMARK-CHAIN-0',
    'nat -A PREROUTING -m comment --comment "AWS, CONNMARK" -j CONNMARK --restore-mark '
    "--nfmask 0x80 --ctmask 0x80",
]
SNAT_RETURNS = [
    'nat -A AWS-SNAT-CHAIN-0 -d 10.0.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN',
    'nat -A AWS-SNAT-CHAIN-0 -d 100.64.0.0/16 -m comment --comment "AWS SNAT CHAIN" -j RETURN',
]
SNAT_RULE = (
    'nat -A AWS-SNAT-CHAIN-0 ! -o vlan+ -m comment --comment "AWS, SNAT" -m addrtype ! --dst-type LOCAL '
    "-j SNAT --to-source 10.0.0.5"
)
CONNMARK_CHAIN = [
    'nat -A AWS-CONNMARK-CHAIN-0 -d 10.0.0.0/16 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN',
    'nat -A AWS-CONNMARK-CHAIN-0 -d 100.64.0.0/16 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN',
    'nat -A AWS-CONNMARK-CHAIN-0 -m comment --comment "AWS, CONNMARK" -j CONNMARK --set-xmark 0x80/0x80',
]
MANGLE_NODEPORT = (
    'mangle -A PREROUTING -i ens5 -m comment --comment "AWS, primary ENI" -m addrtype --dst-type LOCAL '
    "--limit-iface-in -j CONNMARK --set-xmark 0x80/0x80"
)
MANGLE_ENI = (
    'mangle -A PREROUTING -i eni+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark '
    "--nfmask 0x80 --ctmask 0x80"
)
MANGLE_VLAN = (
    'mangle -A PREROUTING -i vlan+ -m comment --comment "AWS, primary ENI" -j CONNMARK --restore-mark '
    "--nfmask 0x80 --ctmask 0x80"
)


def test_default_mode() -> None:
    assert render(BASE) == [
        SNAT_JUMP,
        *CONNMARK_JUMPS,
        *SNAT_RETURNS,
        SNAT_RULE + " --random-fully",
        *CONNMARK_CHAIN,
        MANGLE_NODEPORT,
        MANGLE_ENI,
        MANGLE_VLAN,
    ]


def test_randomize_hashrandom_and_none() -> None:
    hashed = render(HostNetworkConfig(**{**BASE.__dict__, "randomize_snat": SnatRandomization.HASHRANDOM}))
    assert SNAT_RULE + " --random" in hashed
    plain = render(HostNetworkConfig(**{**BASE.__dict__, "randomize_snat": SnatRandomization.NONE}))
    assert SNAT_RULE in plain
    assert not any("--random" in line for line in plain)


def test_exclusions_follow_vpc_cidrs_and_match_everything_without_d() -> None:
    config = HostNetworkConfig(
        **{**BASE.__dict__, "exclude_snat_cidrs": (IPv4Network("192.168.0.0/16"), IPv4Network("0.0.0.0/0"))}
    )
    lines = render(config)
    snat_chain = [line for line in lines if line.startswith("nat -A AWS-SNAT-CHAIN-0")]
    assert snat_chain == [
        *SNAT_RETURNS,
        'nat -A AWS-SNAT-CHAIN-0 -d 192.168.0.0/16 -m comment --comment "AWS SNAT CHAIN EXCLUSION" -j RETURN',
        'nat -A AWS-SNAT-CHAIN-0 -m comment --comment "AWS SNAT CHAIN EXCLUSION" -j RETURN',
        SNAT_RULE + " --random-fully",
    ]
    connmark_chain = [line for line in lines if line.startswith("nat -A AWS-CONNMARK-CHAIN-0")]
    assert connmark_chain == [
        *CONNMARK_CHAIN[:2],
        'nat -A AWS-CONNMARK-CHAIN-0 -d 192.168.0.0/16 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN',
        'nat -A AWS-CONNMARK-CHAIN-0 -m comment --comment "AWS CONNMARK CHAIN" -j RETURN',
        CONNMARK_CHAIN[2],
    ]


def test_external_snat_keeps_only_nodeport_mangle_rules() -> None:
    assert render(HostNetworkConfig(**{**BASE.__dict__, "external_snat": True})) == [
        MANGLE_NODEPORT,
        MANGLE_ENI,
        MANGLE_VLAN,
    ]


def test_external_snat_without_nodeport_has_nothing() -> None:
    config = HostNetworkConfig(**{**BASE.__dict__, "external_snat": True, "node_port_support": False})
    assert render(config) == []


def test_nodeport_off_keeps_eni_restore_while_snat_is_ours() -> None:
    lines = render(HostNetworkConfig(**{**BASE.__dict__, "node_port_support": False}))
    assert [line for line in lines if line.startswith("mangle")] == [MANGLE_ENI]


def test_nft_backend_leaves_connmark_to_nft() -> None:
    assert render(BASE, ConnmarkBackend.NFTABLES) == [
        SNAT_JUMP,
        *SNAT_RETURNS,
        SNAT_RULE + " --random-fully",
        MANGLE_NODEPORT,
        MANGLE_ENI,
        MANGLE_VLAN,
    ]


def test_custom_mark_and_prefix() -> None:
    lines = render(HostNetworkConfig(**{**BASE.__dict__, "connmark": 0x4000, "veth_prefix": "cali"}))
    assert (
        'nat -A PREROUTING -i cali+ -m comment --comment "AWS, outbound connections" -j AWS-CONNMARK-CHAIN-0'
        in lines
    )
    assert (
        'nat -A AWS-CONNMARK-CHAIN-0 -m comment --comment "AWS, CONNMARK" -j CONNMARK '
        "--set-xmark 0x4000/0x4000" in lines
    )


def test_nft_table_body_golden() -> None:
    config = HostNetworkConfig(**{**BASE.__dict__, "exclude_snat_cidrs": (IPv4Network("192.168.1.7/32"),)})
    assert connmark_table_body(config) == (
        "\tchain nat-prerouting {\n"
        "\t\ttype nat hook prerouting priority dstnat + 10; policy accept;\n"
        "\t\tfib daddr type local return\n"
        '\t\tiifname "eni*" counter jump snat-mark\n'
        "\t\tcounter meta mark set ct mark & 0x00000080\n"
        "\t}\n"
        "\n"
        "\tchain snat-mark {\n"
        "\t\tip daddr 10.0.0.0/16 return\n"
        "\t\tip daddr 100.64.0.0/16 return\n"
        "\t\tip daddr 192.168.1.7 return\n"
        "\t\tcounter ct mark set ct mark | 0x00000080\n"
        "\t}\n"
    )
