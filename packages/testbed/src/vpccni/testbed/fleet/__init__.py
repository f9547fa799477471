"""The fleet simulation: hundreds of nodes running the product's pool code against one account's EC2 limits.

`python -m vpccni.testbed.fleet` (or `nox -s fleet`) runs it with vpccni's pacing and a model of upstream's,
and writes `bench/results/fleet.json` and the "At scale" section of `docs/benchmarks.md`.
"""
