"""vpccni.testbed: a hermetic AWS node (EC2, IMDS, Kubernetes API, VPC datapath) for tests and demos."""
