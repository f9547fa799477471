"""The iptables seam: `Iptables` protocol, the command-line adapter, and the save/restore plan.

Rules are kept in the exact text form `iptables-save` prints (identical for the legacy and nft flavours), so
"desired vs existing" is a comparison of strings, and changes go in one atomic `iptables-restore --noflush`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .commands import ToolRunner

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
}

# table -> chain -> rule specs (the text after "-A <chain> ") in order
SavedTable = dict[str, list[str]]


class IptablesMode(enum.Enum):
    """Which kernel backend the host's `iptables` drives."""

    LEGACY = "legacy"
    NFT = "nf_tables"


def parse_iptables_mode(version_output: str) -> IptablesMode:
    """Parse `iptables --version` ("iptables v1.8.9 (nf_tables)"); old builds without a tag are legacy."""
    return IptablesMode.NFT if "nf_tables" in version_output else IptablesMode.LEGACY


class Iptables(Protocol):
    """iptables (or ip6tables) of one network namespace."""

    def mode(self) -> IptablesMode:
        """`iptables --version`, parsed."""
        ...

    def save(self, table: str) -> str:
        """`iptables-save -t TABLE`."""
        ...

    def restore(self, text: str) -> None:
        """`iptables-restore --noflush --wait` (atomic per table)."""
        ...


@dataclass(frozen=True, kw_only=True)
class IptablesCommands:
    """Binary names; `iptables` is usually iptables-wrapper / the host's alternative."""

    iptables: str = "iptables"
    save: str = "iptables-save"
    restore: str = "iptables-restore"

    @classmethod
    def flavour(cls, mode: IptablesMode, *, family: int = 4) -> IptablesCommands:
        """The explicit `iptables-legacy*` or `iptables-nft*` binaries (`ip6tables-*` for family 6)."""
        suffix = "legacy" if mode is IptablesMode.LEGACY else "nft"
        tool = "ip6tables" if family == 6 else "iptables"
        return cls(
            iptables=f"{tool}-{suffix}", save=f"{tool}-{suffix}-save", restore=f"{tool}-{suffix}-restore"
        )

    @classmethod
    def ipv6(cls) -> IptablesCommands:
        """`ip6tables`, `ip6tables-save`, `ip6tables-restore` (the host's alternative)."""
        return cls(iptables="ip6tables", save="ip6tables-save", restore="ip6tables-restore")


class CommandIptables:
    """`Iptables` over the iptables binaries, in the current namespace or in a named one."""

    def __init__(self, *, commands: IptablesCommands = IptablesCommands(), runner: ToolRunner | None = None):
        self._commands = commands
        self._runner = runner or ToolRunner()

    def mode(self) -> IptablesMode:
        return parse_iptables_mode(self._runner([self._commands.iptables, "--version"]))

    def save(self, table: str) -> str:
        return self._runner([self._commands.save, "-t", table])

    def restore(self, text: str) -> None:
        self._runner([self._commands.restore, "--noflush", "--wait"], stdin=text)


def parse_save(text: str) -> SavedTable:
    """Chains and rules of the single table in `iptables-save -t TABLE` output."""
    chains: SavedTable = {}
    for line in text.splitlines():
        if line.startswith(":"):
            chains.setdefault(line[1:].split(" ", 1)[0], [])
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            chains.setdefault(chain, []).append(rest[0] if rest else "")
    return chains


@dataclass(frozen=True, kw_only=True)
class DesiredTable:
    """What vpccni wants in one table.

    `chains`: chains vpccni owns, with their full content (a chain absent here is deleted if it is ours);
    `builtin`: vpccni's rules in built-in chains, in order (other rules there are left alone);
    `head`: vpccni's rules that must come first in a built-in chain, before anyone's (`-I chain 1`).
    """

    name: str
    chains: Mapping[str, Sequence[str]] = field(default_factory=dict)
    builtin: Mapping[str, Sequence[str]] = field(default_factory=dict)
    head: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Ownership:
    """How to recognise vpccni's chains and its rules in built-in chains (including older layouts)."""

    is_our_chain: Callable[[str], bool]
    is_our_rule: Callable[[str], bool]


def plan_restore(desired: DesiredTable, existing: SavedTable, ownership: Ownership) -> str | None:
    """The `iptables-restore --noflush` input turning `existing` into `desired`; None when nothing differs."""
    declare: list[str] = []
    deletes: list[str] = []
    inserts: list[str] = []
    appends: list[str] = []
    flushes: list[str] = []
    removals: list[str] = []
    for chain, rules in desired.chains.items():
        if existing.get(chain) != list(rules) or chain not in existing:
            # Declaring a chain in --noflush mode creates it, or flushes it if present: a full rewrite.
            declare.append(f":{chain} - [0:0]")
            appends.extend(f"-A {chain} {rule}" for rule in rules)
    for chain in BUILTIN_CHAINS.get(desired.name, ()):
        head = list(desired.head.get(chain, ()))
        want = list(desired.builtin.get(chain, ()))
        rules = existing.get(chain, [])
        ours = [rule for rule in rules if ownership.is_our_rule(rule)]
        if ours != head + want or rules[: len(head)] != head:
            deletes.extend(f"-D {chain} {rule}" for rule in ours)
            inserts.extend(f"-I {chain} {position} {rule}" for position, rule in enumerate(head, 1))
            appends.extend(f"-A {chain} {rule}" for rule in want)
    for chain in existing:
        if chain not in desired.chains and ownership.is_our_chain(chain):
            # Flush every stale chain before deleting any: older layouts chain them into each other.
            flushes.append(f"-F {chain}")
            removals.append(f"-X {chain}")
    body = [*declare, *deletes, *inserts, *appends, *flushes, *removals]
    if not body:
        return None
    return "\n".join([f"*{desired.name}", *body, "COMMIT", ""])


_COMMENT = re.compile(r'--comment "([^"]*)"')


def comment_of(rule: str) -> str | None:
    """The `-m comment` text of a rule spec."""
    found = _COMMENT.search(rule)
    return found.group(1) if found else None
