"""The CNI grammar the chaos suite fuzzes with: it covers the grammar, and it stays on the test's ground."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from vpccni.testbed.chaos.cnigrammar import (
    VALID_ATTACHMENTS,
    VERSIONS,
    Attachment,
    CniCase,
    FuzzContext,
    NetnsKind,
    defang,
    generate,
)

SENTINEL = Attachment(container_id="a" * 64, ifname="eth0", namespace="sentinel", name="s-1", ip="10.0.0.9")
CTX = FuzzContext(
    network="aws-cni",
    base={
        "cniVersion": "0.4.0",
        "name": "aws-cni",
        "type": "aws-cni",
        "mtu": "9001",
        "vethPrefix": "eni",
        "cniSocket": "/node/run/cni.sock",
        "delQueueDir": "/node/run/del-queue",
        "pluginLogFile": "/node/plugin.log",
    },
    cni_socket="/node/run/cni.sock",
    del_queue_dir="/node/run/del-queue",
    plugin_log="/node/plugin.log",
    scratch="/scratch",
    cni_path="/node/bin",
    sentinels=(SENTINEL,),
)


@pytest.fixture(scope="module")
def cases() -> list[CniCase]:
    found, drawn = generate(CTX, 400, seed=7)
    assert drawn >= len(found)
    return found


def test_cases_are_distinct_and_reproducible(cases: list[CniCase]) -> None:
    assert len(set(cases)) == len(cases) == 400
    assert generate(CTX, 50, seed=7)[0] == generate(CTX, 50, seed=7)[0]


def test_the_grammar_is_covered(cases: list[CniCase]) -> None:
    commands = Counter(c.command for c in cases)
    assert {"ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"} <= set(commands)
    assert commands["ADD"] > commands["VERSION"]
    confs = [c.netconf() for c in cases]
    versions = {conf.get("cniVersion") for conf in confs if conf}
    assert set(VERSIONS) <= versions and versions - set(VERSIONS), "every version, and bad ones"
    assert any(conf and "prevResult" in conf for conf in confs)
    assert any(conf and VALID_ATTACHMENTS in conf for conf in confs)
    assert any(conf is None for conf in confs), "raw stdin that is no configuration"
    assert {NetnsKind.FRESH, NetnsKind.SENTINEL, NetnsKind.MISSING} <= {c.netns for c in cases}
    args = [dict(c.env).get("CNI_ARGS", "") for c in cases]
    assert any("K8S_POD_NAME=s-1" in a and "K8S_POD_NAMESPACE=sentinel" in a for a in args), "name collisions"


def test_every_path_a_case_names_is_the_nodes_own_or_under_the_scratch_directory(
    cases: list[CniCase],
) -> None:
    for case in cases:
        assert "CNI_NETNS" not in dict(case.env), "the executor sets CNI_NETNS"
        conf = case.netconf() or {}
        for key in ("cniSocket", "delQueueDir", "pluginLogFile"):
            # Without them the shim would use the machine's /var/run/aws-node.
            assert key in conf or "name" not in conf, f"{key} missing from {conf}"
            value = conf.get(key)
            if isinstance(value, str) and value.startswith("/"):
                assert value.startswith(("/scratch/", "/node/")), value


def test_no_case_legitimately_removes_a_sentinel(cases: list[CniCase]) -> None:
    for case in cases:
        env = dict(case.env)
        if env.get("CNI_COMMAND") == "DEL":
            assert (env.get("CNI_CONTAINERID"), env.get("CNI_IFNAME")) != (SENTINEL.container_id, "eth0")
        attachments = (case.netconf() or {}).get(VALID_ATTACHMENTS)
        if _well_formed(attachments):
            assert {"containerID": SENTINEL.container_id, "ifname": "eth0"} in attachments


def _well_formed(attachments: object) -> bool:
    return isinstance(attachments, list) and all(
        isinstance(a, dict) and isinstance(a.get("containerID"), str) and isinstance(a.get("ifname"), str)
        for a in attachments
    )


def test_defang_replaces_a_del_of_a_sentinel_attachment() -> None:
    env = (("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", SENTINEL.container_id), ("CNI_IFNAME", "eth0"))
    case = defang(CniCase(env=env, netns=NetnsKind.FRESH, stdin=b"{}"), CTX)
    assert dict(case.env)["CNI_CONTAINERID"] != SENTINEL.container_id
    other = CniCase(env=(("CNI_COMMAND", "ADD"), *env[1:]), netns=NetnsKind.FRESH, stdin=b"{}")
    assert defang(other, CTX) == other


def test_a_case_round_trips_to_json_for_a_replay() -> None:
    case = CniCase(env=(("CNI_COMMAND", "ADD"),), netns=NetnsKind.FIFO, stdin=b"\xff{")
    doc = json.loads(json.dumps(case.to_json()))
    assert doc == {"env": {"CNI_COMMAND": "ADD"}, "netns": "fifo", "stdin_hex": "ff7b"}
