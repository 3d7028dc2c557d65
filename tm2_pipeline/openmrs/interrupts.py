"""Ctrl-C (SIGINT) and SIGTERM during a submission: stop sending at a point the event loop chooses.

A handler that raises at an arbitrary bytecode (Python's own, or Dagster's inside a step) lands in
whichever task happens to run: that record fails on its own and the loop sends the rest, so the run
goes on for minutes. Here the signal cancels the whole submission instead. Requests in flight are
cut, their records stay `in_flight` (the next run looks in OpenMRS before sending them), and
`KeyboardInterrupt` is raised once the loop has wound down.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def stopped_by_interrupts(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run `coroutine`; SIGINT or SIGTERM cancels it, then raises KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(coroutine)
    received: list[int] = []

    def interrupt(number: int) -> None:
        received.append(number)
        task.cancel()

    installed = []
    for number in _SIGNALS:
        previous = signal.getsignal(number)
        try:
            loop.add_signal_handler(number, interrupt, number)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or Windows
            continue
        installed.append((number, previous))
    try:
        return await task
    except asyncio.CancelledError:
        if received:
            raise KeyboardInterrupt(f"stopped by {signal.Signals(received[0]).name}") from None
        raise
    finally:
        for number, previous in installed:
            loop.remove_signal_handler(number)
            if previous is not None:  # the handler that was there (Dagster's, Python's), back in place
                signal.signal(number, previous)
