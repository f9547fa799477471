"""vpccni.testbed: a hermetic AWS node for tests, benchmarks and demos: EC2, IMDS, Kubernetes API, VPC datapath."""
