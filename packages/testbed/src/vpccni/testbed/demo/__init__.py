"""The simulated-cluster demo: `python -m vpccni.testbed.demo` (what `bash scripts/demo.sh` runs)."""
