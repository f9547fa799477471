"""Network policy in the testbed: real-packet probes, pods in the API server, the conformance suite."""
