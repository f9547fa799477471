"""The hostile frames the chaos suite sends to cni.sock and ipamd.sock are what they claim to be."""

from __future__ import annotations

import json
import random
import struct

from vpccni.cniplugin import wire
from vpccni.testbed.chaos.frames import (
    HTTP2_PREFACE,
    CniFrame,
    GrpcFrame,
    bad_request,
    cni_frame,
    grpc_frame,
    valid_request,
)


def test_a_valid_request_is_one_the_endpoint_accepts() -> None:
    request = wire.Request.from_dict(valid_request("ADD", netns_fd=True, container_id="ab" * 32))
    assert (request.command, request.has_netns_fd, request.container_id) == ("ADD", True, "ab" * 32)


def test_a_bad_request_is_refused_by_the_endpoints_own_validation() -> None:
    rng = random.Random(1)
    refused = 0
    for _ in range(200):
        try:
            wire.Request.from_dict(bad_request(rng))
        except Exception:
            refused += 1
    # Some broken fields only fail deeper (a bad network name, an unsupported version): most fail here.
    assert refused > 100


def test_truncated_and_oversized_frames() -> None:
    rng = random.Random(2)
    whole = wire.encode(valid_request("STATUS"))
    for _ in range(50):
        cut = cni_frame(CniFrame.TRUNCATED, rng)
        assert 0 < len(cut) < len(whole) and whole.startswith(cut)
        huge = cni_frame(CniFrame.HUGE_HEADER, rng)
        assert int.from_bytes(huge[:4], "big") > wire.MAX_MESSAGE_BYTES
    body = cni_frame(CniFrame.OVERSIZED_BODY, rng)
    assert int.from_bytes(body[:4], "big") == len(body) - 4 > wire.MAX_MESSAGE_BYTES


def test_fd_mismatch_frames_are_adds_that_announce_or_not_a_netns_fd() -> None:
    rng = random.Random(3)
    announced = {json.loads(cni_frame(CniFrame.FD_MISMATCH, rng)[4:])["netnsFd"] for _ in range(40)}
    assert announced == {True, False}


def test_http2_frames_carry_the_length_they_announce_unless_huge() -> None:
    rng = random.Random(4)
    assert HTTP2_PREFACE.startswith(grpc_frame(GrpcFrame.TRUNCATED_PREFACE, rng))
    huge = grpc_frame(GrpcFrame.HUGE_FRAME, rng)
    assert huge.startswith(HTTP2_PREFACE)
    header = huge[len(HTTP2_PREFACE) + 9 :][:9]  # after the empty SETTINGS frame
    assert struct.unpack(">I", b"\0" + header[:3])[0] == 0xFFFFFF
    garbage = grpc_frame(GrpcFrame.PREFACE_GARBAGE, rng)[len(HTTP2_PREFACE) + 9 :]
    while garbage:
        length = struct.unpack(">I", b"\0" + garbage[:3])[0]
        assert len(garbage) >= 9 + length
        garbage = garbage[9 + length :]
