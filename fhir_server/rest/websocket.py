"""The R4 websocket channel of Subscriptions: `ws(s)://<host>/fhir/websocket`.

Protocol (R4 / HAPI style), one text frame per line:

    client: bind <subscription id>      (also `bind Subscription/<id>`)
    server: bound <subscription id>     or  error <status> <reason>
    server: ping <subscription id>      each time a notification is delivered

The connection is authenticated like any request: `Authorization: Bearer <JWT>` on the upgrade
request or, for browsers (which cannot set headers on a websocket), `?access_token=<JWT>`. Only
the owner of a websocket subscription (or a trusted system) may bind to it.

The sockets live in this process; binding one is recorded in the database, so that a
notification triggered through any server process is pinged here by this process's delivery
worker (through `notifier.hub`).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import TimeoutError as FutureTimeout

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from fhir_server.access.actor import Actor
from fhir_server.engine.errors import FhirError
from fhir_server.server import FhirServer

WEBSOCKET_PATH = "/fhir/websocket"
SEND_TIMEOUT_SECONDS = 5.0
POLICY_VIOLATION = 1008            # websocket close code: authentication failed


def mount(app: FastAPI, server: FhirServer) -> None:
    """Add the websocket route (nothing when the notify module is not installed)."""
    notifier = getattr(server, "notifier", None)
    if notifier is None:
        return
    app.add_api_websocket_route(WEBSOCKET_PATH, SubscriptionSocket(server).serve)


class _Listener:
    """What the hub sees of one connection: a send usable from the worker's thread."""

    def __init__(self, websocket: WebSocket, loop: asyncio.AbstractEventLoop) -> None:
        self.websocket = websocket
        self.loop = loop

    def send(self, text: str) -> bool:
        future = asyncio.run_coroutine_threadsafe(self.websocket.send_text(text), self.loop)
        try:
            future.result(SEND_TIMEOUT_SECONDS)
        except (FutureTimeout, RuntimeError, OSError, WebSocketDisconnect):
            future.cancel()
            return False
        except Exception:          # the socket closed under us: starlette raises various errors
            return False
        return True


class SubscriptionSocket:
    def __init__(self, server: FhirServer) -> None:
        self.server = server
        self.notifier = server.notifier

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            actor = await run_in_threadpool(self._authenticate, websocket)
        except FhirError as exc:
            await websocket.send_text(f"error {exc.status} {exc.issues[0].diagnostics}")
            await websocket.close(code=POLICY_VIOLATION)
            return
        listener = _Listener(websocket, asyncio.get_running_loop())
        try:
            while True:
                command = await websocket.receive_text()
                reply = await run_in_threadpool(self._handle, command, actor, listener)
                if reply is not None:
                    await websocket.send_text(reply)
        except WebSocketDisconnect:
            pass
        finally:
            await run_in_threadpool(self.notifier.release_socket, listener)

    def _authenticate(self, websocket: WebSocket) -> Actor:
        header = websocket.headers.get("authorization")
        token = websocket.query_params.get("access_token")
        return self.server.authenticator.authenticate(header or (f"Bearer {token}" if token else None))

    def _handle(self, command: str, actor: Actor, listener: _Listener) -> str | None:
        """Answer one command; None when the answer was already sent."""
        verb, _, argument = command.strip().partition(" ")
        if verb.lower() != "bind" or not argument.strip():
            return "error 400 Unknown command: send 'bind <subscription id>'"
        subscription_id = argument.strip().removeprefix("Subscription/")
        refusal = self.notifier.binding_refusal(subscription_id, actor)
        if refusal is not None:
            return f"error {refusal}"
        # Recorded first, so that a write anywhere once the client reads `bound` is pinged here;
        # `bound` goes out before the first `ping` can: the client searches once bound, so a
        # change in between is not missed.
        self.notifier.hold_socket(subscription_id)
        listener.send(f"bound {subscription_id}")
        self.notifier.hub.bind(subscription_id, listener)
        return None
