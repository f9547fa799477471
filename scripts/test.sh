#!/usr/bin/env bash
# Runs the whole test suite: lint, types, unit, netns, integration, chaos (short), e2e and the wheel build
# check.
# Needs root (network namespaces, containerd). Extra arguments go to nox, e.g. `-s unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# Tests and the demo start the console scripts (aws-k8s-agent, aws-cni, ...) by name.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/nox --no-error-on-missing-interpreters "$@"
