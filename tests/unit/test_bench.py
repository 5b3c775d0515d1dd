"""`make bench`'s own checks: a missing load generator is named with how to get it, a load
generator that printed no figures says what it printed, and the servers' CPU is found by the
port they listen on."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from benchmarks.bench import Unavailable, cpu_seconds, listener, parse_hey, parse_wrk, tool, webhook_bodies
from tests.asyncapi import validator


def test_a_missing_tool_is_named_with_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(Unavailable, match=r"wrk is not installed .*scripts/local/loadgen.sh install"):
        tool("wrk")
    with pytest.raises(Unavailable, match=r"py-spy is not installed .*pip install py-spy"):
        tool("py-spy")


def test_a_tool_beside_the_python_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spy = tmp_path / "py-spy"
    spy.write_text("#!/bin/sh\n")
    spy.chmod(0o755)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    assert tool("py-spy") == str(spy)


def test_a_load_generator_without_figures_says_what_it_printed() -> None:
    with pytest.raises(
        RuntimeError, match="wrk gave no figures: 'unable to connect to 127.0.0.1:1 Connection refused'"
    ):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
    with pytest.raises(RuntimeError, match="hey gave no figures"):
        parse_hey("Error: connection refused\n")


def test_the_server_is_the_process_listening_on_its_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listener(port) == os.getpid()
        used = cpu_seconds(set(), {os.getpid(): "postgres"})
    assert used["postgres"] > 0
    assert used["scorer"] == 0


def test_the_webhook_bench_sends_level_changes_as_the_contract_describes() -> None:
    bodies = webhook_bodies(30, 7)
    changes = [json.loads(body) for body in bodies]
    for change in changes:
        validator("LevelChange").validate(change)
    seqs: dict[str, list[int]] = {}
    for change in changes:
        seqs.setdefault(change["member_id"], []).append(change["seq"])
    assert len(seqs) == 7 and all(s == list(range(1, len(s) + 1)) for s in seqs.values())
    assert len({change["event_id"] for change in changes}) == 30
