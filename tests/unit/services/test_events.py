"""The live-event broker: fan-out per infusion session, thread-safe publish, overflow."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from ketaflow.errors import InputError
from ketaflow.services.events import (
    EventBroker,
    StreamEvent,
    SubscriptionOverflowError,
    publish_after_commit,
)
from ketaflow.store.uow import UnitOfWork
from service_testkit import T0

#: Upper bound for waiting on an event that should already be queued, seconds.
WAIT_S = 2.0


def test_event_wire_form() -> None:
    event = StreamEvent(type="vitals.recorded", ts=T0, data={"hr_bpm": 72})
    assert event.to_json() == {
        "type": "vitals.recorded",
        "ts": "2025-03-01T09:00:00.000000Z",
        "data": {"hr_bpm": 72},
    }


def test_subscribers_get_their_sessions_events_in_order() -> None:
    broker = EventBroker()

    async def scenario() -> tuple[list[str], list[str], int]:
        async with broker.subscribe(1) as one, broker.subscribe(2) as two:
            assert broker.subscriber_count(1) == 1
            assert broker.publish(1, "a", {}, ts=T0) == 1
            assert broker.publish(2, "b", {}, ts=T0) == 1
            assert broker.publish(1, "c", {"n": 3}, ts=T0) == 1
            got_one = [(await asyncio.wait_for(one.next(), WAIT_S)).type for _ in range(2)]
            got_two = [(await asyncio.wait_for(two.next(), WAIT_S)).type]
        return got_one, got_two, broker.subscriber_count(1)

    got_one, got_two, remaining = asyncio.run(scenario())
    assert got_one == ["a", "c"]
    assert got_two == ["b"]
    assert remaining == 0  # leaving the block unsubscribes
    assert broker.publish(1, "nobody listens", {}, ts=T0) == 0


def test_every_subscriber_of_a_session_gets_each_event() -> None:
    broker = EventBroker()

    async def scenario() -> list[str]:
        async with broker.subscribe(7) as first, broker.subscribe(7) as second:
            assert broker.publish(7, "x", {}, ts=T0) == 2
            return [(await asyncio.wait_for(s.next(), WAIT_S)).type for s in (first, second)]

    assert asyncio.run(scenario()) == ["x", "x"]


def test_publish_from_another_thread_reaches_the_loop() -> None:
    broker = EventBroker()

    async def scenario() -> list[int]:
        async with broker.subscribe(3) as subscription:
            worker = threading.Thread(
                target=lambda: [broker.publish(3, "tick", {"i": i}, ts=T0) for i in range(50)]
            )
            worker.start()
            received = []
            async for event in subscription:
                received.append(event.data["i"])
                if len(received) == 50:
                    break
            worker.join()
            return received

    assert asyncio.run(scenario()) == list(range(50))


def test_a_subscriber_that_falls_behind_is_cut_off_not_silently_skipped() -> None:
    broker = EventBroker(max_queue=2)

    async def scenario() -> list[str]:
        async with broker.subscribe(1) as subscription:
            for name in ("a", "b", "c", "d"):
                broker.publish(1, name, {}, ts=T0)
            await asyncio.sleep(0)  # let the loop run the scheduled deliveries
            got = [(await subscription.next()).type for _ in range(2)]
            with pytest.raises(SubscriptionOverflowError):
                await subscription.next()
            return got

    assert asyncio.run(scenario()) == ["a", "b"]


@pytest.mark.parametrize("max_queue", [0, -1])
def test_queue_bound_must_be_positive(max_queue: int) -> None:
    with pytest.raises(InputError):
        EventBroker(max_queue=max_queue)


def test_naive_event_time_is_refused() -> None:
    with pytest.raises(InputError):
        EventBroker().publish(1, "x", {}, ts=T0.replace(tzinfo=None))


def test_events_are_published_only_when_the_unit_of_work_commits(
    make_uow: Callable[[], UnitOfWork],
) -> None:
    broker = EventBroker()

    async def scenario() -> list[str]:
        async with broker.subscribe(9) as subscription:

            def rolled_back() -> None:
                with make_uow() as uow:
                    publish_after_commit(uow, broker, 9, "lost", {}, ts=T0)
                    raise RuntimeError("rolled back")

            with pytest.raises(RuntimeError):
                rolled_back()
            with make_uow() as uow:
                publish_after_commit(uow, broker, 9, "kept", {"ok": True}, ts=T0)
                assert broker.subscriber_count(9) == 1
            return [(await asyncio.wait_for(subscription.next(), WAIT_S)).type]

    assert asyncio.run(scenario()) == ["kept"]
