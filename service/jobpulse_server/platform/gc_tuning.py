"""Cyclic garbage collector settings for a server holding thousands of open streams.

CPython's collector runs a young-generation pass every 700 container allocations
and, every hundred or so of those, a pass over every tracked object. A fan-out of
one change to 1,000 streams allocates tens of thousands of short-lived objects
(futures, handles, frames), so it triggers passes mid-fan-out, and with the
streams' long-lived state plus everything imported at start-up each full pass
scans hundreds of thousands of objects. Measured with ``make bench-watch``: the
collector was the largest single item in the server's profile during fan-out,
and its pauses were the tail of the delivery latency (``python -m bench watch``).

So at start-up the server freezes what exists (modules, schema, descriptors: they
live as long as the process and need never be scanned) and raises the
young-generation threshold, which makes every kind of pass rarer. Objects freed
by reference counting, the vast majority, are freed at once as before; only
reference cycles wait longer, bounded by the threshold.
"""

from __future__ import annotations

import gc


def tune(gen0_threshold: int) -> None:
    """Freezes the objects alive now and sets the young-generation threshold (0: leave both alone)."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
