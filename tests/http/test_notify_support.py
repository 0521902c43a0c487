"""Shared helpers of the notify tests (no tests here): a local HTTP receiver for rest-hook
deliveries, fast worker settings, polling, and resource builders."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from fhir_server.notify import NotifyConfig
from fhir_server.notify.codes import NOTIFICATION_CATEGORY
from fhir_server.notify.endpoints import EndpointPolicy
from fhir_server.rest.websocket import WEBSOCKET_PATH, mount

INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
T = TypeVar("T")

# Small delays so that retries, backoff and the error state happen within a test's second; the
# local receiver (127.0.0.1, refused by default as a loopback address) explicitly allowed.
LOCAL_RECEIVER = EndpointPolicy.parse("127.0.0.1")
FAST = NotifyConfig(poll_seconds=0.02, retry_base_seconds=0.05, retry_max_seconds=0.2, max_failures=50,
                    http_timeout_seconds=2.0, lease_seconds=5.0, batch=50, endpoints=LOCAL_RECEIVER)


@contextlib.contextmanager
def minimal_documents() -> Iterator[None]:
    """No profile required on write while the app is built: the documents of these tests are
    minimal, as the notification rules do not depend on the PDSm profile (tested on its own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FHIR_REQUIRED_PROFILES", "none")
        yield


def idle_worker_at_teardown(client: TestClient) -> None:
    """Stop the delivery worker before the `client` fixture drops the database: the embedded
    database server can deadlock when a database is dropped under an open transaction (the worker
    activating a subscription, say). The lifespan would stop it, but only after the drop."""
    client.app.state.fhir.notifier.worker.stop()


def use_fast_worker(client: TestClient, **changes: Any) -> None:
    """Fast retry settings, and the websocket route (until app.py mounts it itself)."""
    server = client.app.state.fhir
    server.notifier.config = NotifyConfig(**{**FAST.__dict__, **changes})
    if not any(getattr(route, "path", None) == WEBSOCKET_PATH for route in client.app.router.routes):
        mount(client.app, server)


def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A rest-hook endpoint on 127.0.0.1 that records what it receives. `down()` closes the
    port (connection refused), `up()` listens again on the same port."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status = 200
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.received.append(Received(self.command, self.path, {k.lower(): v for k, v in
                                                                            self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = _record

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def patient_resource(patient_id: str, ins: str) -> dict:
    return {"resourceType": "Patient", "id": patient_id, "identifier": [{"system": INS, "value": ins}],
            "name": [{"family": "Martin", "given": ["Élodie"]}]}


def practitioner_resource(rpps: str, family: str = "Durand") -> dict:
    return {"resourceType": "Practitioner", "id": f"ps-{rpps}", "identifier": [{"system": RPPS, "value": rpps}],
            "name": [{"family": family, "given": ["Jean"]}]}


def document(patient_id: str, title: str, **extra: Any) -> dict:
    return {"resourceType": "DocumentReference", "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "content": [{"attachment": {"contentType": "text/plain", "title": title}}], **extra}


def subscription(criteria: str, endpoint: str | None = None, channel: str = "rest-hook", **channel_extra: Any
                 ) -> dict:
    channel_element: dict = {"type": channel, **channel_extra}
    if endpoint:
        channel_element["endpoint"] = endpoint
    return {"resourceType": "Subscription", "status": "requested", "reason": "Tests", "criteria": criteria,
            "channel": channel_element}


def notifications(client: TestClient, patient_id: str, code: str | None = None) -> list[dict]:
    """The notification Communications of a patient (newest first), optionally of one kind."""
    category = f"{NOTIFICATION_CATEGORY}|{code}" if code else f"{NOTIFICATION_CATEGORY}|"
    response = client.get("/fhir/Communication", params={"recipient": f"Patient/{patient_id}",
                                                          "category": category, "_sort": "-_lastUpdated"})
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]


def status_of(client: TestClient, subscription_id: str, headers: dict | None = None) -> dict:
    response = client.get(f"/fhir/Subscription/{subscription_id}/$status", headers=headers or {})
    assert response.status_code == 200, response.text
    return response.json()


def parameter(parameters: dict, name: str) -> Any:
    for p in parameters["parameter"]:
        if p["name"] == name:
            return next((v for k, v in p.items() if k.startswith("value")), p.get("part"))
    return None


def counts(parameters: dict) -> dict[str, int]:
    """Deliveries per state, from a $status answer."""
    return {part["name"]: part["valueInteger"] for part in parameter(parameters, "count")}


def deliveries(parameters: dict) -> list[dict[str, Any]]:
    """The delivery parts of a $status answer as plain dicts (attempts as a list)."""
    found = []
    for p in parameters["parameter"]:
        if p["name"] != "delivery":
            continue
        item: dict[str, Any] = {"attempt": []}
        for part in p["part"]:
            if part["name"] == "attempt":
                item["attempt"].append({a["name"]: next(v for k, v in a.items() if k.startswith("value"))
                                        for a in part["part"]})
            else:
                item[part["name"]] = next(v for k, v in part.items() if k.startswith("value"))
        found.append(item)
    return found


def wait_active(client: TestClient, subscription_id: str, headers: dict | None = None) -> dict:
    def active() -> dict | None:
        body = client.get(f"/fhir/Subscription/{subscription_id}", headers=headers or {}).json()
        return body if body.get("status") == "active" else None
    return wait_until(active, what=f"Subscription/{subscription_id} to become active")
