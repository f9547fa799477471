"""The nftables connmark backend (upstream v1.23.0+): table `ip aws-cni`, chains `nat-prerouting` and
`snat-mark`.

The table is rendered in the exact form `nft list table` prints, so desired and existing compare as text
(counters stripped), and a change replaces the whole table in one atomic `nft -f` transaction.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network
from typing import Protocol

from .commands import ToolRunner
from .config import HostNetworkConfig

NFT_FAMILY = "ip"
NFT_TABLE = "aws-cni"
NAT_PREROUTING_CHAIN = "nat-prerouting"
SNAT_MARK_CHAIN = "snat-mark"

_COUNTER = re.compile(r"counter packets \d+ bytes \d+")


class Nft(Protocol):
    """nftables of one network namespace."""

    def list_table(self, family: str, name: str) -> str | None:
        """`nft list table FAMILY NAME`; None if there is no such table."""
        ...

    def replace_table(self, family: str, name: str, body: str) -> None:
        """Atomically (re)create the table with `body` (its chains) in one `nft -f` transaction."""
        ...

    def delete_table(self, family: str, name: str) -> bool:
        """`nft delete table FAMILY NAME`; False if it was not there."""
        ...


class CommandNft:
    """`Nft` over the `nft` binary, in the current namespace or a named one."""

    def __init__(self, *, nft: str = "nft", runner: ToolRunner | None = None) -> None:
        self._nft = nft
        self._runner = runner or ToolRunner()

    def list_table(self, family: str, name: str) -> str | None:
        try:
            code, out, _ = self._runner.try_run([self._nft, "list", "table", family, name])
        except FileNotFoundError:  # no nft binary: there can be no table to see
            return None
        return out if code == 0 else None

    def replace_table(self, family: str, name: str, body: str) -> None:
        # "add" makes the delete safe when the table is absent; all three lines commit together.
        script = (
            f"add table {family} {name}\ndelete table {family} {name}\ntable {family} {name} {{\n{body}}}\n"
        )
        self._runner([self._nft, "-f", "-"], stdin=script)

    def delete_table(self, family: str, name: str) -> bool:
        if self.list_table(family, name) is None:
            return False
        self._runner([self._nft, "delete", "table", family, name])
        return True


def _daddr(cidr: IPv4Network) -> str:
    if cidr.prefixlen == 0:
        return ""
    return f"ip daddr {cidr.network_address if cidr.prefixlen == 32 else cidr} "


def connmark_table_body(config: HostNetworkConfig) -> str:
    """The chains of `ip aws-cni`, as `nft list` prints them."""
    mark = f"{config.connmark:#010x}"
    returns = "".join(f"\t\t{_daddr(cidr)}return\n" for cidr in config.return_cidrs)
    return (
        f"\tchain {NAT_PREROUTING_CHAIN} {{\n"
        # priority -90 = dstnat + 10: after kube-proxy's DNAT (-100), so Service traffic is judged post-DNAT.
        "\t\ttype nat hook prerouting priority dstnat + 10; policy accept;\n"
        "\t\tfib daddr type local return\n"
        f'\t\tiifname "{config.veth_prefix}*" counter jump {SNAT_MARK_CHAIN}\n'
        f"\t\tcounter meta mark set ct mark & {mark}\n"
        "\t}\n"
        "\n"
        f"\tchain {SNAT_MARK_CHAIN} {{\n"
        f"{returns}"
        f"\t\tcounter ct mark set ct mark | {mark}\n"
        "\t}\n"
    )


def normalize_listing(text: str) -> list[str]:
    """Comparable lines of a table listing: counters, blank lines and the table wrapper dropped."""
    lines = [_COUNTER.sub("counter", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0].startswith("table "):
        lines = lines[1:-1]
    return lines
