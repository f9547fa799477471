"""How the chaos suite judges a plugin's answer, and finds tracebacks in logs."""

from __future__ import annotations

import json
from pathlib import Path

from vpccni.testbed.chaos.fuzzcni import judge_output
from vpccni.testbed.chaos.logscan import LogScanner, tracebacks_in

RESULT = json.dumps({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32"}], "dns": {}})


def error(code: int, msg: str = "no") -> str:
    return json.dumps({"cniVersion": "1.0.0", "code": code, "msg": msg})


def test_answers_that_follow_the_protocol() -> None:
    assert judge_output("ADD", 0, RESULT, "") == judge_output("DEL", 0, "", "")
    assert judge_output("ADD", 1, error(11), "").code == 11
    assert judge_output("VERSION", 0, json.dumps({"supportedVersions": ["1.0.0"]}), "").violation == ""
    assert judge_output("ADD", 1, error(101), "").violation == ""  # plugin-defined codes start at 100


def test_answers_that_break_it() -> None:
    assert "without a result" in judge_output("ADD", 0, "", "").violation
    assert "printed" in judge_output("DEL", 0, RESULT, "").violation
    assert "not JSON" in judge_output("ADD", 1, "Traceback ...", "").violation
    assert "without an error object" in judge_output("ADD", 1, json.dumps({"code": "11"}), "").violation
    assert "exit status" in judge_output("ADD", 2, error(11), "").violation
    assert "not one the spec defines" in judge_output("ADD", 1, error(9), "").violation


def test_internal_errors_stand_for_tracebacks() -> None:
    assert judge_output("ADD", 1, error(999, "internal error in aws-cni: KeyError: 'x'"), "").internal
    assert judge_output("ADD", 1, error(999, "ipamd: ValueError: bad"), "").internal
    assert not judge_output("ADD", 1, error(999, "failed to assign an IP address"), "").internal
    assert judge_output("DEL", 0, "", "Traceback (most recent call last):\n").internal


def test_tracebacks_in_json_and_plain_logs() -> None:
    json_line = json.dumps(
        {"msg": "handler failed", "error": 'Traceback (most recent call last):\n  File "x"\nValueError: boom'}
    )
    plain = 'Traceback (most recent call last):\n  File "x", line 1\n    y\nKeyError: 5\nnext line'
    (one,) = tracebacks_in(json_line + "\n" + '{"msg": "fine"}', file="ipamd.log")
    assert one.summary == "handler failed -> ValueError: boom"
    (two,) = tracebacks_in(plain, file="stdout.log")
    assert two.summary == "KeyError: 5"


def test_the_scanner_reads_only_what_was_written_since_the_mark(tmp_path: Path) -> None:
    log = tmp_path / "ipamd.log"
    log.write_text("Traceback (most recent call last):\nOldError\n")
    scanner = LogScanner([log, tmp_path / "absent.log"])
    scanner.mark()
    assert scanner.since_mark() == []
    with open(log, "a") as f:
        f.write("Traceback (most recent call last):\n  File x\nNewError: y\n")
    assert [t.summary for t in scanner.since_mark()] == ["NewError: y"]
    log.write_text("")  # rotated
    assert scanner.since_mark() == []
