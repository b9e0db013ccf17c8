"""Following the journal: stored events after `since`, then live ones, each exactly once.

`EventFeed.follow` replays from the store, then takes live events from the bus (it
subscribes first, so nothing falls between the two), and with `until_terminal` ends after
the run's `run.finished`. It yields lists of events: everything stored that one query
returned, or everything queued for the subscriber when it wakes up. An SSE stream writes
each list in one send, so a follower that lags (hundreds of followers of a chatty run on
two cores do) catches up with one wake-up and one socket write instead of one per event;
`RunService.follow` (the CLI) yields the same events one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Protocol

from flwd.events.bus import EventBus
from flwd.events.records import Record
from flwd.models import Event

TERMINAL_EVENT = "run.finished"

#: Seconds an idle follower of a run waits before checking the store for the run's end.
#: Only a safety net: `run.finished` arrives through the bus like any event.
IDLE_RECHECK = 5.0

#: Most events in one batch of a replay: what a replaying stream holds while its client
#: reads, however long the stored history it replays, and how much it renders before
#: letting other requests run (60 replays starting together kept `/health` waiting
#: 0.2-0.8 s with 256).
REPLAY_BATCH = 64


class JournalView(Protocol):
    """The parts of `flwd.events.journal.Journal` a feed reads."""

    @property
    def bus(self) -> EventBus: ...

    @property
    def last_published(self) -> int: ...

    async def read_records(
        self,
        *,
        since: int = 0,
        run_id: str | None = None,
        job_id: str | None = None,
    ) -> list[Record]: ...


class EventFeed:
    def __init__(
        self,
        journal: JournalView,
        run_ended: Callable[[str], Awaitable[bool]],
        *,
        idle_recheck: float = IDLE_RECHECK,
    ) -> None:
        self.journal = journal
        self.run_ended = run_ended
        self.idle_recheck = idle_recheck

    async def follow(
        self,
        *,
        since: int | None,
        run_id: str | None = None,
        job_id: str | None = None,
        until_terminal: bool = False,
        on_overflow: Callable[[], None] | None = None,
    ) -> AsyncIterator[list[Event]]:
        """Non-empty batches of events after `since`, in id order, each event once.

        `since=None` starts at the run's first event when `run_id` is given, else live.
        With `until_terminal` (and `run_id`), the last batch ends with the run's
        `run.finished`, or the feed ends once the run is found ended with nothing left.
        May raise `flwd.events.bus.SlowConsumer`: the caller resumes from its last id;
        `on_overflow` is called as soon as the subscription overflows (the consumer may be
        blocked writing to its client and not take again for a while).
        """
        stops = until_terminal and run_id is not None
        with self.journal.bus.subscribe(
            run_id=run_id, job_id=job_id, on_overflow=on_overflow
        ) as sub:
            # Subscribed before replaying: the store holds everything committed, the
            # subscription everything published since; ids <= last are skipped on both sides.
            if since is not None:
                last = since
            else:
                last = 0 if run_id is not None else self.journal.last_published
            catch_up = True
            while True:
                if catch_up:
                    ended = stops and run_id is not None and await self.run_ended(run_id)
                    while ended or (first := sub.first_id) is None or first > last + 1:
                        # The store only for what the subscription does not hold (all of
                        # it once the run has ended): a follower that keeps up shares the
                        # bus's records with the others instead of private copies.
                        records = await self.journal.read_records(
                            since=last, run_id=run_id, job_id=job_id
                        )
                        if not records:
                            break
                        for i, (batch, finished) in enumerate(_replay(last, records, stops)):
                            if i:
                                await asyncio.sleep(0)  # fair to other requests (see sse)
                            last = batch[-1].id
                            yield batch
                            if finished:
                                return
                        last = max(last, records[-1].last_id)
                    if ended:
                        return
                    catch_up = False
                records = await sub.take(self.idle_recheck if stops else None)
                if not records:
                    catch_up = True  # idle for a while: has the run ended unseen?
                    continue
                batch, finished = _after(last, records, stops)
                if batch:
                    last = batch[-1].id
                    yield batch
                if finished:
                    return


def _replay(
    last: int, records: Iterable[Record], stops: bool
) -> Iterator[tuple[list[Event], bool]]:
    """The events of stored `records` with id > `last`, in batches of at most
    `REPLAY_BATCH`, each with whether it ends with `run.finished` (when `stops`). Events
    are made as the batches are taken, so a replay holds one batch of them at a time."""
    batch: list[Event] = []
    for record in records:
        if record.last_id <= last:
            continue
        for event in record.iter_events(last):
            batch.append(event)
            if stops and event.type == TERMINAL_EVENT:
                yield batch, True
                return
            if len(batch) >= REPLAY_BATCH:
                yield batch, False
                batch = []
    if batch:
        yield batch, False


def _after(last: int, records: Iterable[Record], stops: bool) -> tuple[list[Event], bool]:
    """The events of `records` with id > `last`, cut after `run.finished` when `stops`."""
    batch: list[Event] = []
    for record in records:
        if record.last_id <= last:
            continue
        for event in record.events():
            if event.id > last:
                batch.append(event)
                if stops and event.type == TERMINAL_EVENT:
                    return batch, True
    return batch, False
