"""The chain heads this process wrote last, so that an append can move a head without reading it
first (one database round trip less per AuditEvent).

Only a hint: the compare-and-set that moves a head checks that the stored head still has the
cached `_ver` *and* `hash`. A head moved by another process, or a cached head whose transaction
was rolled back, makes that compare-and-set miss; the append then forgets the entry and reads the
head again. The integrity of a chain never rests on this cache.
"""

from __future__ import annotations

MAX_HEADS = 100_000          # bounds memory; emptied when full (each chain then costs one read again)


class ChainHeads:
    def __init__(self, capacity: int = MAX_HEADS) -> None:
        self._capacity = capacity
        self._heads: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        return self._heads.get(key)

    def remember(self, head: dict) -> None:
        if len(self._heads) >= self._capacity:
            self._heads.clear()
        self._heads[head["_id"]] = dict(head)

    def forget(self, key: str) -> None:
        self._heads.pop(key, None)
