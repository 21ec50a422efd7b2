"""In-process publish/subscribe of live events, keyed by infusion session id.

Services publish (from any thread) with :meth:`EventBroker.publish`, normally through
:func:`publish_after_commit` so that nobody sees an event whose data was rolled back.
Subscribers (the WebSocket stream) run on an asyncio event loop::

    async with broker.subscribe(session_id) as subscription:
        async for event in subscription:
            await websocket.send_json(event.to_json())

Each subscriber has its own bounded queue. A subscriber that falls :attr:`max_queue` events
behind is cut off (its iteration raises :class:`SubscriptionOverflowError`) rather than silently
losing events: the client reconnects and reloads the current state.

The broker lives in one process. Several server processes would need a shared broker
(PostgreSQL LISTEN/NOTIFY, for example) behind the same two methods.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from ketaflow.errors import InputError
from ketaflow.store.audit import format_ts
from ketaflow.store.uow import UnitOfWork

#: Events a subscriber may fall behind before it is cut off.
DEFAULT_MAX_QUEUE: Final[int] = 256


class SubscriptionOverflowError(Exception):
    """The subscriber fell too far behind and was cut off; reconnect and reload."""


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One live event: ``type`` (e.g. ``"vitals.recorded"``), ``ts`` (aware UTC) and ``data``
    (JSON-ready, identifiers and measurements only)."""

    type: str
    ts: datetime
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"type", "ts", "data"}`` with ``ts`` as ISO 8601 UTC (``Z``)."""
        return {"type": self.type, "ts": format_ts(self.ts), "data": dict(self.data)}


_OVERFLOW: Final = object()


class Subscription:
    """The events of one infusion session, for one subscriber, in publish order."""

    def __init__(self, session_id: int, loop: asyncio.AbstractEventLoop, max_queue: int) -> None:
        self.session_id = session_id
        self._loop = loop
        self._max_queue = max_queue
        self._queue: asyncio.Queue[StreamEvent | object] = asyncio.Queue()
        self._overflowed = False

    def _deliver(self, event: StreamEvent) -> None:
        # Runs on the subscriber's loop (scheduled thread-safely by the broker).
        if self._overflowed:
            return
        if self._queue.qsize() >= self._max_queue:
            self._overflowed = True
            self._queue.put_nowait(_OVERFLOW)
            return
        self._queue.put_nowait(event)

    async def next(self) -> StreamEvent:
        """The next event; waits for one. Raises :class:`SubscriptionOverflowError` when cut off."""
        item = await self._queue.get()
        if item is _OVERFLOW:
            raise SubscriptionOverflowError(
                f"subscriber to session {self.session_id} fell {self._max_queue} events behind"
            )
        assert isinstance(item, StreamEvent)
        return item

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        while True:
            yield await self.next()


class EventBroker:
    """Fan-out of :class:`StreamEvent` to the subscribers of each infusion session."""

    def __init__(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        if max_queue < 1:
            raise InputError(f"max_queue must be >= 1; got {max_queue}.", field="max_queue")
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._subscribers: dict[int, set[Subscription]] = {}

    def publish(
        self, session_id: int, event_type: str, data: Mapping[str, Any], *, ts: datetime
    ) -> int:
        """Send an event to every current subscriber of ``session_id``; thread-safe.

        Returns the number of subscribers it was queued for (0 when nobody listens; events are
        not stored for later subscribers).
        """
        if ts.tzinfo is None:
            raise InputError("event ts must be timezone-aware UTC; got a naive datetime.")
        event = StreamEvent(type=event_type, ts=ts, data=dict(data))
        with self._lock:
            targets = list(self._subscribers.get(session_id, ()))
        delivered = 0
        for subscription in targets:
            try:
                subscription._loop.call_soon_threadsafe(subscription._deliver, event)
            except RuntimeError:
                # The subscriber's loop has closed; its subscribe() block is ending anyway.
                continue
            delivered += 1
        return delivered

    def subscriber_count(self, session_id: int) -> int:
        """How many subscribers ``session_id`` has now."""
        with self._lock:
            return len(self._subscribers.get(session_id, ()))

    @asynccontextmanager
    async def subscribe(self, session_id: int) -> AsyncIterator[Subscription]:
        """Subscribe to ``session_id`` for the duration of the ``async with`` block."""
        subscription = Subscription(session_id, asyncio.get_running_loop(), self.max_queue)
        with self._lock:
            self._subscribers.setdefault(session_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                remaining = self._subscribers.get(session_id)
                if remaining is not None:
                    remaining.discard(subscription)
                    if not remaining:
                        del self._subscribers[session_id]


def publish_after_commit(
    uow: UnitOfWork,
    broker: EventBroker,
    session_id: int,
    event_type: str,
    data: Mapping[str, Any],
    *,
    ts: datetime,
) -> None:
    """Publish the event once ``uow`` commits; nothing is published if it rolls back."""
    payload = dict(data)

    def _publish() -> None:
        broker.publish(session_id, event_type, payload, ts=ts)

    uow.after_commit(_publish)
