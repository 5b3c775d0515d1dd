"""Webhooks (SPEC §12) against the whole system and a real HTTP receiver on 127.0.0.1 (the
session's dispatcher allows private addresses for it; one test checks the refusal without)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.scorer.outbox import cloud_event
from tests.asyncapi import validator
from tests.e2e.conftest import System, post_events
from tests.e2e.test_notifier import event
from tests.integration.test_cli import cl
from tests.support import eventually, read_topic, values
from tests.webhooks import Receiver, Request


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as started:
        yield started


async def add_endpoint(system: System, url: str, *options: str) -> tuple[int, str]:
    """`cl webhook add`: the endpoint's id and secret."""
    code, said = await cl(system.env, "webhook", "add", url, *options, "--operator", "test")
    assert code == 0, said
    added = re.search(r"endpoint (\d+) added", said)
    secret = re.search(r"(whsec_\S+)", said)
    assert added and secret, said
    return int(added.group(1)), secret.group(1)


async def remove_endpoint(system: System, endpoint_id: int) -> None:
    code, said = await cl(system.env, "webhook", "remove", str(endpoint_id), "--operator", "test")
    assert code == 0, said


def ups_and_downs(member: str, n: int) -> list[dict[str, object]]:
    """Events that move a member n times: an article promotes, its removal demotes."""
    return [event("article" if i % 2 == 0 else "content_removed", member, f"a{i // 2}") for i in range(n)]


LEVEL = b"community.level."


async def changes_on_topic(system: System, members: set[str]) -> list[dict[str, object]]:
    """The members' level changes on the topic (not their badge or programme events)."""
    records = await read_topic(system.bootstrap, system.env["CL_TOPIC_LEVEL_CHANGES"], members)
    return values([m for m in records if dict(m.headers).get("ce_type", b"").startswith(LEVEL)])


def level_changes(requests: list[Request]) -> list[Request]:
    return [r for r in requests if r.payload["type"].startswith(LEVEL.decode())]


async def test_each_event_is_signed_in_order_per_member_and_an_erasure_tells_to_forget(
    system: System, ingest: httpx.AsyncClient, receiver: Receiver
) -> None:
    members = {f"wh-{uuid.uuid4().hex[:10]}" for _ in range(3)}
    endpoint, secret = await add_endpoint(system, receiver.url("/ok"), "--events", "all")
    try:
        for member in sorted(members):
            await post_events(ingest, ups_and_downs(member, 6))

        async def all_six() -> bool:
            got = level_changes(receiver.got("/ok", members))
            return all(len([r for r in got if r.member == m]) >= 6 for m in members)

        await eventually(all_six, timeout=60, what="six level changes of each member at the endpoint")
        verifier = Webhook(secret)
        for request in receiver.got("/ok", members):
            verified = verifier.verify(request.body, request.headers)  # raises if the signature is wrong
            validator("WebhookPayload").validate(verified)  # as docs/asyncapi.json describes it
            assert request.headers["webhook-id"] == verified["data"]["event_id"]
            if "seq" in verified["data"]:
                assert verified["type"] == f"community.level.{verified['data']['direction']}"
        # `all` takes the badge events too (the first article earns one).
        assert any(r.payload["type"] == "community.badge.granted" for r in receiver.got("/ok", members))
        for member in members:
            seqs = [r.payload["data"]["seq"] for r in level_changes(receiver.got("/ok", {member}))]
            assert seqs == [1, 2, 3, 4, 5, 6], (member, seqs)
        with pytest.raises(WebhookVerificationError, match="signature"):
            Webhook("whsec_" + "A" * 43).verify(receiver.got("/ok", members)[0].body, receiver.got("/ok")[0].headers)

        # An erasure: the endpoint is told to forget the member, after the member's changes.
        erased = sorted(members)[0]
        code, said = await cl(system.env, "member", "erase", erased, "--operator", "test")
        assert code == 0, said

        async def forgotten() -> bool:
            return any(r.payload["type"] == "community.member.erased" for r in receiver.got("/ok", {erased}))

        await eventually(forgotten, timeout=60, what="the erasure at the endpoint")
        last = receiver.got("/ok", {erased})[-1]
        assert last.payload == {
            "type": "community.member.erased",
            "timestamp": last.payload["timestamp"],
            "data": {"member_id": erased},
        }
        validator("WebhookPayload").validate(Webhook(secret).verify(last.body, last.headers))
    finally:
        await remove_endpoint(system, endpoint)


async def test_two_500s_then_the_same_id_is_delivered_and_every_attempt_is_listed(
    system: System, ingest: httpx.AsyncClient, receiver: Receiver
) -> None:
    member = f"wh-{uuid.uuid4().hex[:10]}"
    endpoint, _ = await add_endpoint(system, receiver.url("/flaky"), "--events", "promoted")
    try:
        await post_events(ingest, ups_and_downs(member, 1))

        async def delivered() -> bool:
            return len(receiver.got("/flaky", {member})) == 1

        await eventually(delivered, timeout=60, what="the promotion delivered after two 500s")
        tries = receiver.got("/flaky", {member}, status=None)
        assert [r.status for r in tries] == [500, 500, 200]
        assert len({r.headers["webhook-id"] for r in tries}) == 1
        assert len({r.body for r in tries}) == 1  # the same bytes each time
        assert tries[1].at - tries[0].at >= 0.5  # backed off, not hammered

        code, said = await cl(system.env, "webhook", "deliveries", str(endpoint))
        assert code == 0, said
        rows = [" ".join(line.replace("│", " ").split()) for line in said.splitlines() if member in line]
        assert [row.split()[3:6] for row in rows] == [
            [member, "delivered", "200"],
            [member, "retry", "500"],
            [member, "retry", "500"],
        ], said
    finally:
        await remove_endpoint(system, endpoint)


async def test_an_endpoint_excluding_rescore_and_override_gets_activity_changes_only(
    system: System, ingest: httpx.AsyncClient, receiver: Receiver
) -> None:
    member = f"wh-{uuid.uuid4().hex[:10]}"
    picky, _ = await add_endpoint(
        system, receiver.url("/ok-picky"), "--events", "promoted,demoted", "--exclude-cause", "rescore,override"
    )
    every, _ = await add_endpoint(system, receiver.url("/ok-every"), "--events", "promoted,demoted")
    try:
        await post_events(ingest, ups_and_downs(member, 1))  # seq 1, activity
        await eventually(lambda: _has(receiver, "/ok-every", member, 1), timeout=60, what="seq 1")
        # An override (a pin) is a real level change of cause override: seq 2.
        code, said = await cl(system.env, "member", "pin", member, "1", "--reason", "test", "--operator", "test")
        assert code == 0, said
        # On the topic (through the relay) before the rescore's change below is put after it.
        await eventually(lambda: _has(receiver, "/ok-every", member, 2), timeout=60, what="seq 2 at every")
        # A rescore's level change, as the relay publishes one (a real rescore would change the
        # rules of the whole test session): seq 3.
        first = (await changes_on_topic(system, {member}))[0]
        rescored = {**first, "event_id": f"{member}-rescored", "seq": 3, "cause": {"kind": "rescore"}}
        record = cloud_event(orjson.dumps(rescored), "urn:test")
        producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                system.env["CL_TOPIC_LEVEL_CHANGES"], record.value, key=record.key, headers=list(record.headers.items())
            )
        finally:
            await producer.stop()
        await eventually(lambda: _has(receiver, "/ok-every", member, 3), timeout=60, what="seq 3 at every")
        causes = [r.payload["data"]["cause"]["kind"] for r in receiver.got("/ok-every", {member})]
        assert causes == ["activity", "override", "rescore"]
        # Both endpoints' deliveries of a record are recorded together: the picky one has none
        # waiting, and only the activity change was ever recorded for it.
        assert [kind for kind, _ in await _recorded(system, picky, member)] == ["community.level.promoted"]

        async def picky_done() -> bool:
            return await _recorded(system, picky, member) == [("community.level.promoted", "delivered")]

        await eventually(picky_done, timeout=30, what="the picky endpoint's one delivery made")
        picked = [r.payload["data"]["cause"]["kind"] for r in receiver.got("/ok-picky", {member})]
        assert picked == ["activity"]
    finally:
        await remove_endpoint(system, picky)
        await remove_endpoint(system, every)


async def _recorded(system: System, endpoint: int, member: str) -> list[tuple[str, str]]:
    """The deliveries recorded for an endpoint about a member: (type, state), in order."""
    conn = await asyncpg.connect(system.env["CL_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        rows = await conn.fetch(
            "SELECT event_type, state FROM webhook_deliveries WHERE endpoint_id = $1 AND member_id = $2 ORDER BY id",
            endpoint,
            member,
        )
    finally:
        await conn.close()
    return [(row["event_type"], row["state"]) for row in rows]


async def _has(receiver: Receiver, path: str, member: str, n: int) -> bool:
    return len(receiver.got(path, {member})) >= n


async def test_private_addresses_are_refused_unless_allowed(system: System, receiver: Receiver) -> None:
    env = {name: value for name, value in system.env.items() if name != "CL_WEBHOOK_ALLOW_PRIVATE"}
    for url, why in [
        (receiver.url("/ok"), "loopback"),
        ("http://localhost:9/x", "loopback"),
        ("http://10.1.2.3/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]:9/x", "loopback"),
    ]:
        code, said = await cl(env, "webhook", "add", url, "--events", "all", "--operator", "test")
        assert code == 2 and why in said and "nothing changed" in said, (url, said)
    code, said = await cl(env, "webhook", "list")
    assert code == 0 and receiver.url("/ok") not in said
    code, said = await cl(env, "webhook", "add", "ftp://example.com/x", "--events", "all", "--operator", "t")
    assert code == 2 and "https://" in said
    code, said = await cl(env, "webhook", "add", "https://example.com/x", "--events", "levelup", "--operator", "t")
    assert code == 2 and "no event 'levelup'" in said


async def test_a_hanging_endpoint_does_not_delay_another(
    system: System, ingest: httpx.AsyncClient, receiver: Receiver
) -> None:
    members = {f"wh-{uuid.uuid4().hex[:10]}" for _ in range(4)}
    hanging, _ = await add_endpoint(system, receiver.url("/hang"), "--events", "promoted,demoted")
    healthy, _ = await add_endpoint(system, receiver.url("/ok-beside-hang"), "--events", "promoted,demoted")
    try:
        for member in sorted(members):
            await post_events(ingest, ups_and_downs(member, 3))

        async def all_there() -> bool:
            return len(receiver.got("/ok-beside-hang", members)) == 12

        await eventually(all_there, timeout=60, what="the healthy endpoint's deliveries")
        assert receiver.got("/hang", members, status=0), "the hanging endpoint was not even tried"
        # When each delivery was recorded: from then on, only the dispatcher's own pace counts.
        conn = await asyncpg.connect(system.env["CL_DATABASE_URL"].replace("+asyncpg", ""))
        try:
            rows = await conn.fetch(
                "SELECT event_id, recorded_at FROM webhook_deliveries WHERE endpoint_id = $1", healthy
            )
        finally:
            await conn.close()
        recorded = {row["event_id"]: row["recorded_at"].timestamp() for row in rows}
        delays = [r.at - recorded[r.headers["webhook-id"]] for r in receiver.got("/ok-beside-hang", members)]
        assert max(delays) < 1.0, delays
    finally:
        await remove_endpoint(system, hanging)
        await remove_endpoint(system, healthy)


async def test_a_dispatcher_killed_mid_delivery_loses_nothing(
    system: System, ingest: httpx.AsyncClient, receiver: Receiver
) -> None:
    members = {f"wh-{uuid.uuid4().hex[:10]}" for _ in range(5)}
    endpoint, _ = await add_endpoint(system, receiver.url("/slow"), "--events", "promoted,demoted")
    try:
        for member in sorted(members):
            await post_events(ingest, ups_and_downs(member, 8))

        async def some() -> bool:
            return len(receiver.got("/slow", members, status=None)) >= 5

        await eventually(some, timeout=60, what="deliveries under way")
        system.kill("webhooks")  # SIGKILL, POSTs in flight
        killed_at = time.time()
        await system.astart("webhooks")

        expected = {c["event_id"] for c in await changes_on_topic(system, members)}
        assert len(expected) == 40

        async def everything() -> bool:
            return {r.headers["webhook-id"] for r in receiver.got("/slow", members)} >= expected

        await eventually(everything, timeout=90, what="every level change delivered after the kill")
        assert any(r.at > killed_at for r in receiver.got("/slow", members)), "nothing was left for the restart"
        for member in members:  # each member's events first arrived in order
            firsts = list(dict.fromkeys(r.payload["data"]["seq"] for r in receiver.got("/slow", {member})))
            assert firsts == sorted(firsts) == list(range(1, 9)), (member, firsts)
    finally:
        await remove_endpoint(system, endpoint)
