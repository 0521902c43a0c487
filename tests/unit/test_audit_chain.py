"""The hash chain's pure parts: canonical form, hash, extension placement."""

from __future__ import annotations

import hashlib
import json

from fhir_server.audit.chain import (
    GENESIS,
    canonical_json,
    chain_facts,
    chain_hash,
    chain_key,
    patient_of_key,
    with_chain,
    without_chain,
)
from fhir_server.audit.codes import CHAIN_URL

EVENT = {
    "resourceType": "AuditEvent",
    "id": "e1",
    "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00.000Z"},
    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
    "recorded": "2025-01-01T00:00:00.000Z",
    "agent": [{"who": {"display": "Élodie"}, "requestor": True}],
    "source": {"observer": {"display": "espace"}},
}
OTHER = {"url": "http://example.org/other", "valueString": "kept"}


def test_hash_is_sha256_of_previous_and_canonical_json() -> None:
    expected = hashlib.sha256(GENESIS.encode() + b"\n" + json.dumps(
        EVENT, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()
    assert chain_hash(EVENT, GENESIS) == expected
    assert len(expected) == 64


def test_canonical_form_ignores_key_order_but_not_values() -> None:
    reordered = dict(reversed(list(EVENT.items())))
    assert canonical_json(reordered) == canonical_json(EVENT)
    assert chain_hash(reordered, GENESIS) == chain_hash(EVENT, GENESIS)
    assert chain_hash({**EVENT, "recorded": "2025-01-01T00:00:00.001Z"}, GENESIS) != chain_hash(EVENT, GENESIS)


def test_hash_depends_on_the_previous_link() -> None:
    assert chain_hash(EVENT, GENESIS) != chain_hash(EVENT, "f" * 64)


def test_with_chain_adds_the_extension_after_meta_and_keeps_other_extensions() -> None:
    chained = with_chain({**EVENT, "extension": [OTHER]}, "a" * 64)
    assert list(chained)[:4] == ["resourceType", "id", "meta", "extension"]
    digest = chain_hash({**EVENT, "extension": [OTHER]}, "a" * 64)
    assert chained["extension"] == [OTHER, {"url": CHAIN_URL, "extension": [
        {"url": "previous", "valueString": "a" * 64}, {"url": "hash", "valueString": digest}]}]
    assert chain_facts(chained) == ("a" * 64, digest)


def test_the_hash_covers_the_event_without_its_chain_extension() -> None:
    chained = with_chain(EVENT, GENESIS)
    assert without_chain(chained) == EVENT
    previous, digest = chain_facts(chained)
    assert chain_hash(chained, previous) == digest       # recomputable from the stored form


def test_chaining_twice_replaces_the_extension() -> None:
    twice = with_chain(with_chain(EVENT, GENESIS), "b" * 64)
    assert [e["url"] for e in twice["extension"]] == [CHAIN_URL]
    assert chain_facts(twice)[0] == "b" * 64


def test_chain_facts_absent() -> None:
    assert chain_facts(EVENT) is None
    assert chain_facts({**EVENT, "extension": [OTHER]}) is None


def test_chain_keys() -> None:
    assert chain_key("Patient/p1") == "audit-chain:Patient/p1"
    assert chain_key(None) == "audit-chain:none"
    assert patient_of_key("audit-chain:Patient/p1") == "Patient/p1"
    assert patient_of_key("audit-chain:none") is None
