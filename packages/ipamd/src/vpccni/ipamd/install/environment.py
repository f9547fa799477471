"""Registry variables that are not `Settings` fields (the init container's, the SGP enforcing mode)."""

from __future__ import annotations

from collections.abc import Mapping

from vpccni.ipamd.settings_registry import BY_NAME


def registry_value(environ: Mapping[str, str], name: str) -> object:
    """Parse `name` with its registry parser; empty or unset gives the registry default (as load_settings)."""
    spec = BY_NAME[name]
    raw = environ.get(name, "")
    if raw.strip() == "":
        return spec.default
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r}: {exc}; valid: {spec.valid}") from None


def registry_flag(environ: Mapping[str, str], name: str) -> bool:
    return bool(registry_value(environ, name))
