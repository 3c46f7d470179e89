"""A long-running process's heap once it has started.

Everything a process of ``ssot serve`` builds while starting (modules, the app, its
routes and models, the writer's application, the followers' views) lives as long as the
process. Left to the cyclic garbage collector, each collection of the oldest generation
walks all of it again: on the followers' thread, under the bench's 1,000 writes/s, the
longest such pause of a run was 39-53 ms, every follower of the process stopped meanwhile
(measured with ``gc.callbacks``, three runs each side taking turns; docs/performance.md).
``gc.freeze()`` moves what exists at the end of start-up to the permanent generation,
which no collection walks: the longest pause was then 6-10 ms. What is frozen is still
freed by reference counting when it is dropped; only a reference cycle among frozen
objects would stay.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Collect once (so no garbage of the start-up is frozen), then freeze what is left:
    call it once a process has built what it serves with, before it says it serves (the
    collection takes ~0.1 s)."""
    gc.collect()
    gc.freeze()
