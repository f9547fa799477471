"""The node agent (`aws-network-policy-agent`): enforces this node's pods' PolicyEndpoints (nftables)."""
