"""Marks every test with its tier, taken from the folder it lives in (tests/<tier>/...)."""

from __future__ import annotations

import pytest

pytest_plugins = ["vpccni.testbed.pytest_plugin"]

TIERS = ("unit", "netns", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.parts
        for tier in TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                break
        else:
            item.add_marker(pytest.mark.unit)
