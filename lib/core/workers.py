"""Ordered parallel map for the data stages: results in input order, a bounded number in flight.

The data stages are CPU-bound Python; a process per core does the work, while the caller takes
the results in order and writes them out, so the output is the same bytes with one worker or
many, and memory holds only the few results computed ahead.
"""
from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_settings: Any = None  # what every call in a worker shares, sent once per worker


def cpus() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ordered_map(fn: Callable[[T, Any], R], items: Iterable[T], settings: Any, workers: int | None = None,
                serial_below: int = 0, batch: int = 1) -> Iterator[tuple[T, R]]:
    """(item, fn(item, settings)) for each item, in order.

    `fn` must be a module-level function. Items go to the workers `batch` at a time (sending one
    costs about as much as a small item's work). With one worker, or fewer than `serial_below`
    items (a pool costs more than it saves), everything runs in this process.
    """
    workers = cpus() if workers is None else workers
    if workers > 1 and serial_below:
        items = list(items)
        if len(items) < serial_below:
            workers = 1
    if workers <= 1:
        for item in items:
            yield item, fn(item, settings)
        return
    batches = _batches(iter(items), batch)
    with ProcessPoolExecutor(workers, initializer=_set, initargs=(settings,)) as pool:
        ahead: deque[tuple[list[T], Future[list[R]]]] = deque()
        for chunk in itertools.islice(batches, 4 * workers):
            ahead.append((chunk, pool.submit(_call, fn, chunk)))
        while ahead:
            chunk, future = ahead.popleft()
            results = future.result()
            following = next(batches, None)
            if following is not None:
                ahead.append((following, pool.submit(_call, fn, following)))
            yield from zip(chunk, results)


def _batches(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _set(settings: Any) -> None:
    global _settings
    _settings = settings


def _call(fn: Callable[[T, Any], R], chunk: list[T]) -> list[R]:
    return [fn(item, _settings) for item in chunk]
