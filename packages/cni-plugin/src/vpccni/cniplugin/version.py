"""The product version, shared by every vpccni distribution (lockstep; see scripts/bump_version.py).

The aws-cni shim sends it with every request and ipamd rejects a shim of another version, so a
half-upgraded node fails loudly instead of speaking a protocol the other side does not know.
"""

VERSION = "0.1.0"
