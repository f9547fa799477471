"""The security-groups-for-pods section of the wiring plan (`vpccni.ipamd.plan.sgp_config` builds it)."""

from __future__ import annotations

from dataclasses import dataclass

from vpccni.networkutils.vlan import EnforcingMode


@dataclass(frozen=True, kw_only=True)
class SgpConfig:
    enabled: bool = False  # ENABLE_POD_ENI
    # POD_SECURITY_GROUP_ENFORCING_MODE: the host's local rule (ipamd) and the conflist's podSGEnforcingMode,
    # which each pod's wiring follows.
    enforcing_mode: EnforcingMode = EnforcingMode.STRICT
    annotation_wait_s: float = 10.0  # VPCCNI_POD_ENI_WAIT
    ipv6: bool = False  # ENABLE_IPv6: branch pods get their branch ENI's IPv6 address

    @property
    def strict(self) -> bool:
        return self.enabled and self.enforcing_mode is EnforcingMode.STRICT
