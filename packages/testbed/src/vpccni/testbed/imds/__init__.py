"""The testbed's IMDSv2 server, serving one instance's metadata from the live (or lagged) EC2 state."""
