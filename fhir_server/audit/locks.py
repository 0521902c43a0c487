"""In-process serialisation of appends to one audit chain: striped locks.

Every AuditEvent moves its chain head by compare-and-set; requests of one process appending to
the same chain at once would mostly collide and retry. A lock per chain makes them queue
instead. The locks are striped (a fixed array, chain key -> stripe) so that memory does not grow
with the number of patients; two chains sharing a stripe merely queue together.

The compare-and-set stays: it is what protects a chain against other server processes.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

STRIPES = 64


class ChainLocks:
    def __init__(self, stripes: int = STRIPES) -> None:
        self._locks = [threading.Lock() for _ in range(stripes)]

    def stripe(self, key: str) -> int:
        """The stripe of a chain key (stable for the life of the process)."""
        return zlib.crc32(key.encode("utf-8")) % len(self._locks)

    @contextmanager
    def holding(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold the locks of these chains. Stripes are taken once each and in ascending order,
        so two requests holding overlapping sets of chains cannot deadlock each other."""
        with ExitStack() as stack:
            for stripe in sorted({self.stripe(key) for key in keys}):
                lock = self._locks[stripe]
                lock.acquire()
                stack.callback(lock.release)
            yield

    @contextmanager
    def briefly(self, key: str, timeout: float) -> Iterator[bool]:
        """Try to hold the lock of one chain for at most `timeout` seconds of waiting; yields
        whether it is held. For callers that must not block for long: the body runs either way."""
        lock = self._locks[self.stripe(key)]
        held = lock.acquire(timeout=timeout)
        try:
            yield held
        finally:
            if held:
                lock.release()
