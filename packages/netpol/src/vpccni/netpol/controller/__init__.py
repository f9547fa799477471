"""The network policy controller (`vpccni-netpol-controller`): NetworkPolicy -> PolicyEndpoint objects."""
