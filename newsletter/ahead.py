"""Make items' bytes ahead of asking, in a thread pool: signing overlaps the caller's own work.

`Ahead(make, items, pool)` is called with ITEMS in their order and returns `make(item)` for each,
made CHUNK items to a task, up to WINDOW tasks ahead. OpenSSL's RSA and hashlib release the GIL,
so a pool's threads sign while the caller writes files or waits on sockets. Chunks, not one task
per item: a task costs a queue hand-off and a thread wake-up on each side (tens of microseconds),
which a chunk pays once for all its items.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Executor, Future
from itertools import islice
from typing import Generic, TypeVar

T = TypeVar("T")

CHUNK = 8
WINDOW = 4  # tasks queued or running: two threads busy, two chunks ready; about 5 MB of 170 KB messages


class Ahead(Generic[T]):
    """MAKE(item) for ITEMS asked for in their order, made ahead in POOL; KEY tells items apart.

    An item asked for out of order is made in the caller's thread. An error MAKE raises is raised
    to the caller when that item is asked for, not before, and the items after it are still made.
    """

    def __init__(self, make: Callable[[T], bytes], items: Sequence[T], pool: Executor,
                 key: Callable[[T], Hashable], *, chunk: int = CHUNK, window: int = WINDOW) -> None:
        self._make = make
        self._key = key
        self._pool = pool
        self._todo: Iterator[T] = iter(items)
        self._chunk = chunk
        self._tasks: deque[tuple[list[Hashable], Future[list[bytes | Exception]]]] = deque()
        self._ready: deque[tuple[Hashable, bytes | Exception]] = deque()
        for _ in range(window):
            self._submit()

    def _submit(self) -> None:
        items = list(islice(self._todo, self._chunk))
        if items:
            self._tasks.append(([self._key(item) for item in items], self._pool.submit(self._make_all, items)))

    def _make_all(self, items: list[T]) -> list[bytes | Exception]:
        made: list[bytes | Exception] = []
        for item in items:
            try:
                made.append(self._make(item))
            except Exception as err:  # raised when its item is asked for
                made.append(err)
        return made

    def __call__(self, item: T) -> bytes:
        if not self._ready and self._tasks:
            keys, future = self._tasks.popleft()
            self._submit()
            self._ready.extend(zip(keys, future.result()))
        if self._ready and self._ready[0][0] == self._key(item):
            made = self._ready.popleft()[1]
            if isinstance(made, Exception):
                raise made
            return made
        return self._make(item)  # asked out of order: made here


__all__ = ["Ahead"]
