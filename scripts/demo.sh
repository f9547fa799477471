#!/usr/bin/env bash
# The main job: a simulated cluster of testbed nodes running the real aws-k8s-agent and aws-cni.
# Needs root. Arguments go to the demo, e.g. `--nodes 3 --pods 60 --instance-type m5.xlarge --keep`;
# `--network-policy` shows Kubernetes NetworkPolicy instead (matrices before and after each change, strict mode);
# `--ipv6` makes an IPv6 cluster in a dual-stack VPC (IPv6 pods, IPv4 egress through egress-cni), `--v6-egress`
# an IPv4 cluster with ENABLE_V6_EGRESS (IPv6 egress through egress-cni).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Tests and the demo start the console scripts (aws-k8s-agent, aws-cni, ...) by name.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m vpccni.testbed.demo "$@"
