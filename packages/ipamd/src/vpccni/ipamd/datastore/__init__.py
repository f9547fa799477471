"""The in-memory address datastore: ENI → CIDR (/32 or /28) → address, keyed by the CNI-spec triple."""
