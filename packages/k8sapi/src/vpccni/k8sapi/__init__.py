"""vpccni.k8sapi: Kubernetes API access for the VPC CNI (node, pods, ENIConfig, CNINode, events)."""
