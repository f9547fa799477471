"""A testbed cluster with network policy for the integration tier (root only)."""

from __future__ import annotations

import os

import pytest

if os.geteuid() != 0:
    pytest.skip("the integration tier needs root for network namespaces", allow_module_level=True)
