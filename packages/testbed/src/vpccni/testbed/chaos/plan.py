"""How much of everything each variant does: `short` (the default CI run, a few minutes), `full` (the
committed `bench/results/reliability.json`) and `soak` (an hour of churn with periodic faults)."""

from __future__ import annotations

from dataclasses import dataclass

# Short loop timers so the pool grows and shrinks (ENIs attach and go) within a round; the upstream defaults
# are 5/30/60/60 s and a 30 s cooldown.
FAST_POOL_ENV = {
    "IP_COOLDOWN_PERIOD": "1",
    "VPCCNI_POOL_MONITOR_INTERVAL": "1",
    "VPCCNI_POOL_DECREASE_INTERVAL": "1",
    "VPCCNI_RECONCILE_INTERVAL": "2",
    "VPCCNI_MIN_ENI_AGE": "1",
}


@dataclass(frozen=True, kw_only=True)
class Plan:
    mode: str  # "short", "full" or "soak"
    seed: int = 11
    # crashes
    kill_rounds: int = 50
    churn_workers: int = 2
    churn_low: int = 2
    churn_high: int = 22  # an m5.large holds 27 pods: the wave needs a third ENI and then frees it
    # hostile input
    fuzz_cni_cases: int = 10_000
    fuzz_frames: int = 2_000  # per socket, over every frame kind
    fuzz_slow_clients: int = 16
    fuzz_idle_clients: int = 64
    # local load
    idle_clients: int = 500
    slow_clients: int = 16
    load_samples: int = 20
    load_add_cap_s: float = (
        20.0  # a runtime gives up on a plugin after this (the shim's own deadline is 60 s)
    )
    # cloud faults
    fault_pods: int = 20
    fault_budget_s: float = 120.0  # how long kubelet keeps retrying one fault's pods
    imds_stale_s: float = 30.0
    apiserver_down_s: float = 60.0
    # shutdown
    sigterm_idle_clients: int = 100
    # soak
    soak_s: float = 0.0
    soak_sample_s: float = 60.0
    soak_fault_every_s: float = 300.0

    @classmethod
    def short(cls) -> Plan:
        """Invariants on every change: every kind of fault once, in a few minutes on two cores."""
        return cls(
            mode="short",
            kill_rounds=8,
            fuzz_cni_cases=600,
            fuzz_frames=150,
            fuzz_slow_clients=4,
            fuzz_idle_clients=16,
            idle_clients=200,
            load_samples=5,
            load_add_cap_s=15.0,
            fault_pods=8,
            fault_budget_s=40.0,
            imds_stale_s=10.0,
            apiserver_down_s=15.0,
            sigterm_idle_clients=40,
        )

    @classmethod
    def full(cls) -> Plan:
        return cls(mode="full")

    @classmethod
    def soak(cls, seconds: float) -> Plan:
        return cls(mode="soak", soak_s=seconds)
