"""CNI spec versions: what aws-cni supports, parsing, negotiation and what each version allows."""

from __future__ import annotations

from vpccni.cniplugin.errors import CNIError, ErrorCode

# Same list as upstream's (containernetworking/cni v1.3.0 version.All).
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]
# The spec: a configuration without cniVersion is 0.2.0.
IMPLICIT_VERSION = "0.2.0"


def parse_version(text: object) -> tuple[int, int, int]:
    """``"1.0.0"`` -> ``(1, 0, 0)``; ``"0.4"`` is read as ``0.4.0`` like the Go library does."""
    if not isinstance(text, str) or not 0 < len(text) <= 32:
        raise CNIError(ErrorCode.INCOMPATIBLE_CNI_VERSION, f"invalid CNI version {str(text)[:40]!r}")
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() and p.isascii() for p in parts):
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION, f"invalid CNI version {text!r}: expected e.g. 1.0.0"
        )
    numbers = [int(p) for p in parts] + [0] * (3 - len(parts))
    return numbers[0], numbers[1], numbers[2]


def canonical(text: object) -> str:
    major, minor, micro = parse_version(text)
    return f"{major}.{minor}.{micro}"


def negotiate(cni_version: object, cni_versions: object) -> str:
    """The highest version in ``cniVersion`` and ``cniVersions`` that aws-cni supports (error 1 if none)."""
    wanted = [IMPLICIT_VERSION if cni_version is None else canonical(cni_version)]
    if cni_versions is not None:
        if not isinstance(cni_versions, list) or len(cni_versions) > 64:
            raise CNIError(ErrorCode.INVALID_NETWORK_CONFIG, "cniVersions must be a list of version strings")
        wanted.extend(canonical(v) for v in cni_versions)
    usable = [v for v in wanted if v in SUPPORTED_VERSIONS]
    if not usable:
        raise CNIError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            f"incompatible CNI versions: config requests {', '.join(sorted(set(wanted)))}, "
            f"aws-cni supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    return max(usable, key=parse_version)


def has_ip_version(version: str) -> bool:
    """Results carry ``ips[].version`` in 0.3.0, 0.3.1 and 0.4.0 only."""
    return (0, 3, 0) <= parse_version(version) < (1, 0, 0)


def has_interfaces(version: str) -> bool:
    """Results list ``interfaces`` from 0.3.0 on."""
    return parse_version(version) >= (0, 3, 0)


def allows_check(version: str) -> bool:
    return parse_version(version) >= (0, 4, 0)


def allows_status_and_gc(version: str) -> bool:
    return parse_version(version) >= (1, 1, 0)
