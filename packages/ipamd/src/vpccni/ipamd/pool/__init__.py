"""The warm pool: a snapshot of the node's addresses, the planner that decides what to change, the manager."""
