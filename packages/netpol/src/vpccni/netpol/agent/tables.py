"""The kernel side of the agent: the `inet vpccni-netpol` table, written whole in one nft transaction.

Replacing the table in one transaction is atomic for packets (each sees the old rules or the new ones) and
leaves conntrack alone, so established connections survive every update and every agent restart.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from vpccni.netpol.agent.ruleset import (
    DROP,
    EGRESS_MAP,
    FAMILY,
    INGRESS_MAP,
    STRICT_SET,
    TABLE,
    Ruleset,
    render,
)
from vpccni.networkutils.commands import ToolRunner

log = logging.getLogger(__name__)


class PolicyTables(Protocol):
    """The node's policy table."""

    def apply(self, ruleset: Ruleset) -> None:
        """Replace the whole table with `ruleset`, atomically."""
        ...

    def add_strict_pod(self, veth: str) -> None:
        """Deny `veth` both ways and mark it strict, leaving the rest of the table as it is (an admission the
        agent takes before it can compute the whole table). An entry the veth already has stays."""
        ...

    def strict_pods(self) -> frozenset[str] | None:
        """The host veths the table marks as admitted in strict mode; None when there is no table."""
        ...

    def listing(self) -> str:
        """`nft list table` of the policy table ('' when absent), for operators and support bundles."""
        ...

    def remove(self) -> bool:
        """Delete the table (network policy turned off); False if it was not there."""
        ...


class NftPolicyTables:
    """`PolicyTables` over the `nft` binary, in the current network namespace or a named one (tests)."""

    def __init__(self, *, nft: str = "nft", runner: ToolRunner | None = None) -> None:
        self._nft = nft
        self._runner = runner or ToolRunner()

    def apply(self, ruleset: Ruleset) -> None:
        # `add` makes the `delete` valid when the table is absent; the three statements commit together.
        script = (
            f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
            f"table {FAMILY} {TABLE} {{\n{render(ruleset)}}}\n"
        )
        self._runner([self._nft, "-f", "-"], stdin=script)

    def add_strict_pod(self, veth: str) -> None:
        if self.strict_pods() is None:
            self.apply(Ruleset(ingress={veth: DROP}, egress={veth: DROP}, strict_pods=frozenset({veth})))
            return
        self._runner([self._nft, "add", "element", FAMILY, TABLE, STRICT_SET, f'{{ "{veth}" }}'])
        for name in (EGRESS_MAP, INGRESS_MAP):
            # An existing entry (a policy's chain) answers "File exists": it stays, which is what we want.
            code, _, err = self._runner.try_run(
                [self._nft, "add", "element", FAMILY, TABLE, name, f'{{ "{veth}" : {DROP} }}']
            )
            if code != 0 and "File exists" not in err:
                raise RuntimeError(f"nft add element {name} {veth} failed: {err.strip()}")

    def _json(self, *what: str) -> Any:
        code, out, err = self._runner.try_run([self._nft, "-j", "list", *what])
        if code != 0:
            if "No such file or directory" in err:
                return None
            raise RuntimeError(f"nft list {' '.join(what)} failed: {err.strip()}")
        return json.loads(out)

    def strict_pods(self) -> frozenset[str] | None:
        doc = self._json("set", FAMILY, TABLE, STRICT_SET)
        if doc is None:
            return None
        names: set[str] = set()
        for item in doc.get("nftables", ()):
            for elem in (item.get("set") or {}).get("elem", ()):
                if isinstance(elem, str):
                    names.add(elem)
        return frozenset(names)

    def listing(self) -> str:
        code, out, _ = self._runner.try_run([self._nft, "list", "table", FAMILY, TABLE])
        return out if code == 0 else ""

    def remove(self) -> bool:
        code, _, err = self._runner.try_run([self._nft, "delete", "table", FAMILY, TABLE])
        if code != 0 and "No such file or directory" not in err:
            raise RuntimeError(f"nft delete table {FAMILY} {TABLE} failed: {err.strip()}")
        return code == 0
