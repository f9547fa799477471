"""vpccni.netpol: Kubernetes NetworkPolicy for the VPC CNI (PolicyEndpoint controller, nftables agent)."""
