"""egress-cni: IPv4 egress for IPv6 pods, or IPv6 egress for IPv4 pods (ENABLE_V6_EGRESS), done by ipamd."""
