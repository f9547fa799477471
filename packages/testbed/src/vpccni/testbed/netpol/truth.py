"""Truth tables: which pod reaches which, as the Kubernetes e2e suite writes them (`NewReachability`,
`ExpectPeer`, `ExpectAllIngress`, ...), and how one is printed next to what the packets did.

A pattern names pods: `x/a` one pod, `x/*` a namespace, `*/a` a pod name in every namespace, `*/*` all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def matches(pattern: str, pod: str) -> bool:
    p_ns, _, p_name = pattern.partition("/")
    ns, _, name = pod.partition("/")
    return p_ns in ("*", ns) and p_name in ("*", name)


@dataclass(frozen=True, kw_only=True)
class Expect:
    """Set every (from, to) pair matching the two patterns to `allowed` (applied in order)."""

    src: str
    dst: str
    allowed: bool


def all_ingress(pod: str, allowed: bool) -> Expect:
    return Expect(src="*/*", dst=pod, allowed=allowed)


def all_egress(pod: str, allowed: bool) -> Expect:
    return Expect(src=pod, dst="*/*", allowed=allowed)


def reachability(
    pods: Sequence[str], ops: Iterable[Expect], *, default: bool = True
) -> dict[tuple[str, str], bool]:
    """The (from, to) table over `pods`, loopback left out (its semantics are undefined upstream too)."""
    table = {(s, d): default for s in pods for d in pods if s != d}
    for op in ops:
        for s, d in table:
            if matches(op.src, s) and matches(op.dst, d):
                table[(s, d)] = op.allowed
    return table


def render(
    pods: Sequence[str],
    expected: Mapping[tuple[str, str], bool],
    actual: Mapping[tuple[str, str], bool] | None = None,
) -> str:
    """A from x to grid: `.` allowed, `X` denied; a wrong cell shows what the packets did in brackets."""
    width = max(len(p) for p in pods)
    lines = [" " * (width + 1) + " ".join(f"{p:>{width}}" for p in pods)]
    for s in pods:
        cells = []
        for d in pods:
            if s == d:
                cells.append(f"{'-':>{width}}")
                continue
            want = expected[(s, d)]
            mark = "." if want else "X"
            if actual is not None and actual.get((s, d)) != want:
                mark = f"[{'.' if actual.get((s, d)) else 'X'}]"
            cells.append(f"{mark:>{width}}")
        lines.append(f"{s:>{width}} " + " ".join(cells))
    return "\n".join(lines)
