"""The `conversation` SearchParameter and the reading of message participants."""

from __future__ import annotations

from fhir_server.definitions import load_definitions
from fhir_server.messaging import conversation_parameter
from fhir_server.messaging.participants import is_professional, literal, type_of
from fhir_server.search import SearchRegistry


def test_first_message_and_replies_share_the_conversation_value():
    registry = SearchRegistry(load_definitions())
    assert registry.register(conversation_parameter()) == ["Communication"]
    first = registry.extract_index({"resourceType": "Communication", "id": "m1", "status": "completed"})
    reply = registry.extract_index({"resourceType": "Communication", "id": "m2", "status": "completed",
                                    "inResponseTo": [{"reference": "Communication/m1"}]})
    assert first["conversation"] == reply["conversation"] == ["Communication/m1"]


def test_references():
    message = {"contained": [{"resourceType": "PractitionerRole", "id": "role"}]}
    assert literal({"reference": "https://x.org/fhir/Patient/p1/_history/2"}) == "Patient/p1"
    assert literal({"reference": "#role"}) is None and literal({"reference": "Patient?identifier=x"}) is None
    assert type_of({"reference": "#role"}, message) == "PractitionerRole"
    assert type_of({"identifier": {"system": "https://rpps.esante.gouv.fr", "value": "1"}}, {}) == "Practitioner"
    assert is_professional({"reference": "Organization/o1"}, {})
    assert not is_professional({"reference": "Patient/p1"}, {})
