"""Node-scale benchmarks on the testbed: `python -m vpccni.testbed.bench [--quick]` (`nox -s bench`)."""
