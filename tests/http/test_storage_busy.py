"""A transaction that keeps meeting transient conflicts until the driver's retry time runs out is
answered 503 with Retry-After, stores nothing, and is never a 500."""

from __future__ import annotations

import pytest
from pymongo.client_session import ClientSession
from pymongo.errors import OperationFailure

from tests.http.conftest import patient


def _always_conflicting(self, callback, *args, **kwargs):
    raise OperationFailure("Write conflict during plan execution", 112,
                           {"errmsg": "WriteConflict", "code": 112, "errorLabels": ["TransientTransactionError"]})


@pytest.mark.parametrize("request_of", [
    lambda client: client.post("/fhir/Patient", json=patient(family="Occupé")),
    lambda client: client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:3f1c2a4e-9b7d-4c1e-8a2f-5d6e7f809a1b", "resource": patient(family="Occupé"),
         "request": {"method": "POST", "url": "Patient"}}]}),
])
def test_exhausted_transient_conflicts_answer_503(client, monkeypatch, request_of) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(ClientSession, "with_transaction", _always_conflicting)
        response = request_of(client)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert response.json()["issue"][0]["code"] == "transient"
    assert client.get("/fhir/Patient", params={"family": "Occupé", "_total": "accurate"}).json()["total"] == 0


def test_other_driver_errors_are_not_disguised(client, monkeypatch) -> None:
    def broken(self, callback, *args, **kwargs):
        raise OperationFailure("not transient", 2, {"errmsg": "bad", "code": 2})
    with monkeypatch.context() as patch:
        patch.setattr(ClientSession, "with_transaction", broken)
        with pytest.raises(OperationFailure):
            client.post("/fhir/Patient", json=patient())
