"""The hub's wake-up flags and the shared timeout wheel behind idle-stream heartbeats."""

from __future__ import annotations

import asyncio

from jobpulse_server.events.hub import ChangeHub, TimeoutWheel, Waker

DEADLINE = 10.0  # seconds a test waits for something that must happen, before it fails


def _waiting(wheel: TimeoutWheel) -> set[Waker]:
    return set().union(*(wakers for wakers, _ in wheel._slots.values()))


async def test_a_wait_times_out_no_sooner_than_asked() -> None:
    loop = asyncio.get_running_loop()
    waker = Waker(TimeoutWheel())
    for timeout in (0.05, 0.2):
        started = loop.time()
        woke = await asyncio.wait_for(waker.wait(timeout), DEADLINE)
        assert woke is False
        # call_at may run a timer up to the clock's resolution early, never more.
        assert loop.time() - started >= timeout - 1e-3


async def test_set_wakes_a_waiter_and_the_wheel_forgets_it() -> None:
    wheel = TimeoutWheel()
    waker = Waker(wheel)
    waiter = waker.arm(60)
    assert waiter is not None
    assert _waiting(wheel) == {waker}

    waker.set()
    await asyncio.wait_for(waiter, DEADLINE)
    waker.disarm()
    assert waker.is_set()
    assert _waiting(wheel) == set()

    # A set flag needs no wait; once cleared, the waker waits (and times out) again.
    assert waker.arm(60) is None
    waker.clear()
    assert await asyncio.wait_for(waker.wait(0.01), DEADLINE) is False
    assert _waiting(wheel) == set()


async def test_waits_started_together_share_one_timer() -> None:
    wheel = TimeoutWheel()
    wakers = [Waker(wheel) for _ in range(1000)]
    waiters = [w.arm(60) for w in wakers]
    # A 60 s wait ends on a 7.5 s grid: a thousand waits armed within milliseconds use one or two.
    assert len(wheel._slots) <= 2
    assert _waiting(wheel) == set(wakers)
    for w in wakers:
        w.set()
    await asyncio.wait_for(asyncio.gather(*(f for f in waiters if f is not None)), DEADLINE)
    for w in wakers:
        w.disarm()
    assert _waiting(wheel) == set()
    wheel.close()
    assert not wheel._slots


async def test_a_watcher_cancelled_mid_wait_leaves_nothing_behind() -> None:
    hub = ChangeHub()
    armed = asyncio.Event()

    async def watcher() -> None:
        changed = hub.add_watcher("job-1")
        try:
            waiter = changed.arm(60)
            assert waiter is not None
            armed.set()
            await waiter
        finally:
            hub.remove_watcher("job-1", changed)

    task = asyncio.create_task(watcher())
    await asyncio.wait_for(armed.wait(), DEADLINE)
    assert len(_waiting(hub._wheel)) == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert _waiting(hub._wheel) == set()
    assert not hub.watched("job-1")


async def test_close_wakes_every_watcher_and_cancels_the_wheel_timers() -> None:
    hub = ChangeHub()
    wakers = [hub.add_watcher(f"job-{i}") for i in range(3)]
    waiters = [w.arm(60) for w in wakers]
    timers = [timer for _, timer in hub._wheel._slots.values()]
    assert timers
    hub.close()
    await asyncio.wait_for(asyncio.gather(*(f for f in waiters if f is not None)), DEADLINE)
    assert all(w.is_set() for w in wakers)
    assert hub.closing.is_set()
    assert all(timer.cancelled() for timer in timers)
    assert not hub._wheel._slots
