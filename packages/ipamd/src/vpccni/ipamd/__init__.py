"""vpccni.ipamd: L-IPAMD, the node IP address manager daemon (aws-k8s-agent)."""
