"""The uploader against the contract's ingest (an in-test fake): order, acks, splitting, failures kept."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping

import pytest
from fake_ingest import FakeIngest

from edge_runtime.fleet.backoff import Backoff
from edge_runtime.fleet.errors import TransportError
from edge_runtime.fleet.transport import Reply
from edge_runtime.fleet.uploader import MAX_BODY_BYTES, Uploader, build_body
from edge_runtime.telemetry.spool import Spool

FACTS = {"board": "test", "l4t": None, "jetpack": None, "runtime_version": "0.1.0"}


def record(index: int, pad: int = 0) -> Dict[str, Any]:
    return {"time": 1764086400.0 + index, "interval_s": 10.0, "pad": "x" * pad}


@pytest.fixture()
def spool(tmp_path: Path) -> Iterator[Spool]:
    spool = Spool(tmp_path / "spool.sqlite", 1 << 30)
    yield spool
    spool.close()


def make_uploader(spool: Spool, transport: Any, token: str = "device-token", batch: int = 500) -> Uploader:
    return Uploader(spool, transport, "dev-1", lambda: token, FACTS, Backoff(1.0, 300.0, uniform=lambda: 1.0),
                    batch, poll_s=10.0)


def drain(uploader: Uploader, steps: int = 1000) -> None:
    for _ in range(steps):
        if uploader.step().idle:
            return
    raise AssertionError("the uploader did not drain the spool")


def test_batches_in_sequence_order_then_acked(spool: Spool) -> None:
    server = FakeIngest()
    for i in range(1200):
        spool.append(record(i))
    uploader = make_uploader(spool, server.transport)
    outcome = uploader.step()
    assert outcome.acked == 500 and outcome.wait_s == 0
    drain(uploader)
    assert sorted(server.stored) == list(range(1, 1201))
    assert server.stored[7] == record(6)
    assert set(server.deliveries.values()) == {1}
    assert spool.pending(10) == []
    assert server.facts == FACTS and server.dropped_reported[-1] == 0


def test_body_is_split_to_stay_under_one_mebibyte(spool: Spool) -> None:
    server = FakeIngest()
    for i in range(40):
        spool.append(record(i, pad=100_000))
    drain(make_uploader(spool, server.transport))
    assert sorted(server.stored) == list(range(1, 41))
    assert max(server.bodies) <= MAX_BODY_BYTES and len(server.bodies) >= 4


def test_build_body_is_the_contract_json() -> None:
    body, last = build_body("dev-1", 3, FACTS, [(5, b'{"a":1}'), (6, b'{"a":2}')])
    assert last == 6
    assert json.loads(body) == {"device_id": "dev-1", "dropped": 3, "facts": FACTS,
                                "records": [{"sequence": 5, "record": {"a": 1}}, {"sequence": 6, "record": {"a": 2}}]}


def test_dropped_counter_is_reported(tmp_path: Path) -> None:
    small = Spool(tmp_path / "small.sqlite", 64 * 1024)
    for i in range(100):
        small.append(record(i, pad=2000))
    server = FakeIngest()
    drain(make_uploader(small, server.transport))
    assert small.dropped > 0 and server.dropped_reported == [small.dropped] * len(server.dropped_reported)
    small.close()


@pytest.mark.parametrize("token, device, status", [("wrong", "dev-1", 401), ("device-token", "other", 403)])
def test_wrong_token_keeps_records_logs_once_and_backs_off(spool: Spool, caplog: pytest.LogCaptureFixture,
                                                           token: str, device: str, status: int) -> None:
    server = FakeIngest(device_id=device)
    spool.append(record(0))
    uploader = make_uploader(spool, server.transport, token=token)
    with caplog.at_level(logging.WARNING):
        waits = [uploader.step().wait_s for _ in range(4)]
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert len(spool.pending(10)) == 1 and server.stored == {}
    messages = [r.getMessage() for r in caplog.records if str(status) in r.getMessage()]
    assert len(messages) == 1 and "token" in messages[0]


def test_rotated_token_file_is_picked_up(spool: Spool, tmp_path: Path) -> None:
    server = FakeIngest(token="new-token")
    tokens = ["old-token"]
    spool.append(record(0))
    uploader = Uploader(spool, server.transport, "dev-1", lambda: tokens[0], FACTS, Backoff(uniform=lambda: 1.0))
    assert uploader.step().acked == 0
    tokens[0] = "new-token"
    assert uploader.step().acked == 1


@pytest.mark.parametrize("status", [429, 503])
def test_overload_honours_retry_after(spool: Spool, status: int) -> None:
    server = FakeIngest()
    server.overload = (status, "120")
    spool.append(record(0))
    uploader = Uploader(spool, server.transport, "dev-1", lambda: "device-token", FACTS,
                        Backoff(1.0, 300.0, uniform=lambda: 0.5))
    assert uploader.step().wait_s == 120.0
    server.overload = None
    assert uploader.step().acked == 1
    assert uploader.backoff.failures == 0


def test_network_errors_back_off_with_jitter_and_keep_records(spool: Spool) -> None:
    def down(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        raise TransportError("127.0.0.1: ConnectionRefusedError: refused")

    spool.append(record(0))
    uploader = Uploader(spool, down, "dev-1", lambda: "t", FACTS, Backoff(1.0, 300.0, uniform=lambda: 0.5))
    assert [uploader.step().wait_s for _ in range(11)] == [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150]
    assert len(spool.pending(10)) == 1


def test_a_lost_answer_replays_the_batch_and_the_server_stores_it_once(spool: Spool) -> None:
    server = FakeIngest()
    calls: List[int] = []

    def loses_first_answer(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        reply = server.transport(path, body, headers)
        calls.append(reply.status)
        if len(calls) == 1:
            raise TransportError("connection reset after the server stored the batch")
        return reply

    for i in range(10):
        spool.append(record(i))
    uploader = make_uploader(spool, loses_first_answer)
    assert uploader.step().acked == 0
    assert len(spool.pending(100)) == 10  # not acknowledged: kept
    assert uploader.step().acked == 10
    assert sorted(server.stored) == list(range(1, 11)) and set(server.deliveries.values()) == {2}


def test_only_what_the_server_acknowledged_is_deleted(spool: Spool) -> None:
    for i in range(10):
        spool.append(record(i))

    def acks_part(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        return Reply(200, {}, b'{"accepted": 4, "duplicates": 0, "acked_through": 4}')

    assert make_uploader(spool, acks_part).step().acked == 4
    assert [seq for seq, _ in spool.pending(100)] == list(range(5, 11))


@pytest.mark.parametrize("answer", [b'{"acked_through": 999}', b"{}", b"not json", b'{"acked_through": 0}'])
def test_never_deletes_beyond_the_batch_or_on_a_useless_answer(spool: Spool, answer: bytes) -> None:
    for i in range(10):
        spool.append(record(i))

    def odd(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        return Reply(200, {}, answer)

    uploader = make_uploader(spool, odd, batch=5)
    uploader.step()
    remaining = [seq for seq, _ in spool.pending(100)]
    assert remaining == (list(range(6, 11)) if answer == b'{"acked_through": 999}' else list(range(1, 11)))


def test_413_halves_the_batch(spool: Spool) -> None:
    limits: List[int] = []

    def small_cap(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        count = len(json.loads(body)["records"])
        limits.append(count)
        if count > 100:
            return Reply(413, {}, b'{"error": "body over the cap"}')
        last = json.loads(body)["records"][-1]["sequence"]
        return Reply(200, {}, json.dumps({"acked_through": last}).encode())

    for i in range(300):
        spool.append(record(i))
    drain(make_uploader(spool, small_cap))
    assert limits[:4] == [300, 250, 125, 62] and spool.pending(10) == []


def test_a_record_the_server_refuses_is_isolated_set_aside_and_does_not_block_the_rest(
        spool: Spool, caplog: pytest.LogCaptureFixture) -> None:
    bad = 37  # e.g. a sample whose time is far ahead of the server's clock
    stored: List[int] = []

    def strict(path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        sequences = [item["sequence"] for item in json.loads(body)["records"]]
        if bad in sequences:
            return Reply(400, {}, b'{"error": "records[0].record.time is in the future"}')
        stored.extend(sequences)
        return Reply(200, {}, json.dumps({"acked_through": sequences[-1]}).encode())

    for i in range(120):
        spool.append(record(i))
    uploader = make_uploader(spool, strict, batch=50)
    drain(uploader)
    assert sorted(stored) == [s for s in range(1, 121) if s != bad]  # everything else arrived, once
    assert spool.rejected == 1 and spool.dropped == 0 and spool.pending(10) == []
    assert "record 37 refused by the server and deleted: records[0].record.time is in the future" in caplog.text
    assert uploader.batch_limit == 50  # grown back after the bad record was set aside
