"""Write deploy/dashboards/vpc-cni.json, the Grafana dashboard for the awscni_* metrics every aws-node serves
on :61678 (and vpccni's own): pool, assigned IPs, ENIs, CNI ADD latency, EC2 errors.

    python scripts/gen_dashboard.py            # rewrite it
    python scripts/gen_dashboard.py --check    # fail when the committed file differs (nox -s lint)

The panels are data here so the JSON stays consistent (ids, grid positions, one datasource variable);
tests/unit/test_dashboard.py resolves every metric and label it queries against what ipamd exports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy" / "dashboards" / "vpc-cni.json"
SEL = '{instance=~"$instance"}'
RATE = "[$__rate_interval]"

# (title, unit, [(PromQL, legend)]), two panels a row.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Pod IP addresses: pool and assigned", "short", [
        (f"sum(awscni_total_ip_addresses{SEL})", "in the pool"),
        (f"sum(awscni_assigned_ip_addresses{SEL})", "assigned to pods"),
        (f"sum(awscni_ip_max{SEL})", "instance limit"),
    ]),
    ("Free addresses per node", "short", [
        (f"awscni_total_ip_addresses{SEL} - awscni_assigned_ip_addresses{SEL}", "{{instance}}"),
    ]),
    ("ENIs", "short", [
        (f"sum(awscni_eni_allocated{SEL})", "attached"),
        (f"sum(awscni_eni_max{SEL})", "instance limit"),
    ]),
    ("IPv4 prefixes (prefix delegation)", "short", [
        (f"sum(awscni_total_ipv4_prefixes{SEL})", "/28 prefixes"),
    ]),
    ("CNI ADD latency", "s", [
        (f'histogram_quantile(0.99, sum by (le) (rate(vpccni_cni_request_duration_seconds_bucket{{instance=~"$instance", command="ADD"}}{RATE})))', "p99"),  # noqa: E501
        (f'histogram_quantile(0.5, sum by (le) (rate(vpccni_cni_request_duration_seconds_bucket{{instance=~"$instance", command="ADD"}}{RATE})))', "p50"),  # noqa: E501
    ]),
    ("CNI requests", "reqps", [
        (f"sum(rate(awscni_add_ip_req_count{SEL}{RATE}))", "address requests (ADD)"),
        (f"sum by (reason) (rate(awscni_del_ip_req_count{SEL}{RATE}))", "releases ({{reason}})"),
        (f'sum by (command) (rate(vpccni_cni_request_duration_seconds_count{{instance=~"$instance", result="error"}}{RATE}))', "failed {{command}}"),  # noqa: E501
        (f"sum(rate(awscni_no_available_ip_addresses{SEL}{RATE}))", "no address available"),
    ]),
    ("EC2 API errors", "reqps", [
        (f"sum by (fn) (rate(awscni_ec2api_error_count{SEL}{RATE}))", "{{fn}}"),
        (f"sum by (api, error) (rate(awscni_aws_api_error_count{SEL}{RATE}))", "{{api}} {{error}}"),
    ]),
    ("EC2 API calls and latency", "ms", [
        (f"sum by (api) (rate(awscni_aws_api_latency_ms_sum{SEL}{RATE})) / sum by (api) (rate(awscni_aws_api_latency_ms_count{SEL}{RATE}))", "{{api}} mean"),  # noqa: E501
    ]),
    ("EC2 requests and client-side throttling", "reqps", [
        (f"sum by (fn) (rate(awscni_ec2api_req_count{SEL}{RATE}))", "{{fn}}"),
        (f"sum by (category) (rate(vpccni_ec2_throttle_waits{SEL}{RATE}))", "throttled ({{category}})"),
    ]),
    ("ipamd errors and pool work", "short", [
        (f"sum by (fn) (increase(awscni_ipamd_error_count{SEL}{RATE}))", "errors {{fn}}"),
        (f"sum by (fn) (awscni_ipamd_action_inprogress{SEL})", "in progress {{fn}}"),
        (f"sum(increase(awscni_force_removed_ips{SEL}{RATE}))", "force-removed IPs"),
    ]),
]  # fmt: skip


def dashboard() -> dict[str, Any]:
    panels = []
    for i, (title, unit, queries) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend}
                    for j, (expr, legend) in enumerate(queries)
                ],
            }
        )
    return {
        "title": "Amazon VPC CNI (vpccni)",
        "uid": "vpccni-aws-node",
        "description": "aws-node (L-IPAMD): warm pool, pod addresses, ENIs, CNI ADD latency, EC2 errors",
        "tags": ["vpccni", "aws-vpc-cni", "networking"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
                {
                    "name": "instance",
                    "type": "query",
                    "label": "aws-node",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(awscni_eni_allocated, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/gen_dashboard.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(OUT.parents[2])} is up to date")
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
