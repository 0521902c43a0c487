"""In-process registry of the websocket clients bound to subscriptions (R4 websocket channel).

The REST layer owns the sockets; it registers a `Listener` (anything with a thread-safe
`send(text) -> bool`) per connection, and the delivery worker, on its own thread, publishes
`ping <id>` to the listeners bound to a subscription. No FastAPI here.

Other server processes learn which subscriptions this process holds sockets for through the
database (`Notifier.hold_socket` / `release_socket`, and the worker's upkeep): see worker.py.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Listener(Protocol):
    def send(self, text: str) -> bool:
        """Send one text frame; False when the connection is gone."""
        ...


class WebsocketHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bound: dict[str, list[Listener]] = {}

    def bind(self, subscription_id: str, listener: Listener) -> None:
        with self._lock:
            listeners = self._bound.setdefault(subscription_id, [])
            if listener not in listeners:
                listeners.append(listener)

    def unbind(self, listener: Listener) -> list[str]:
        """Forget a connection (it closed) for every subscription it was bound to; the
        subscriptions left without any listener."""
        orphaned = []
        with self._lock:
            for subscription_id in list(self._bound):
                if listener not in self._bound[subscription_id]:
                    continue
                remaining = [x for x in self._bound[subscription_id] if x is not listener]
                if remaining:
                    self._bound[subscription_id] = remaining
                else:
                    del self._bound[subscription_id]
                    orphaned.append(subscription_id)
        return orphaned

    def subscriptions(self) -> list[str]:
        """The subscriptions with at least one listener here."""
        with self._lock:
            return sorted(self._bound)

    def listeners(self, subscription_id: str) -> list[Listener]:
        with self._lock:
            return list(self._bound.get(subscription_id, ()))

    def publish(self, subscription_id: str, text: str) -> int:
        """Send `text` to every listener bound to the subscription; how many received it.
        Listeners that fail are dropped."""
        received = 0
        for listener in self.listeners(subscription_id):
            if listener.send(text):
                received += 1
            else:
                self.unbind(listener)
        return received
