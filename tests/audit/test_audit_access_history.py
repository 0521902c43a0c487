"""`Patient/[id]/$access-history`: newest first, keyset paging, `_since`, `exclude-self`."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.audit import AuditRecord, AuditTrail
from fhir_server.audit.codes import SUMMARY_URL
from fhir_server.engine.errors import FhirError
from tests.audit.conftest import DOCTOR, NURSE, patient_actor, read_record

BASE = "https://espace.example.org/fhir"


def summary_of(entry: dict) -> dict:
    [extension] = entry["search"]["extension"]
    assert extension["url"] == SUMMARY_URL
    return {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in extension["extension"]}


def params_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def next_link(bundle: dict) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


@pytest.fixture
def accesses(trail: AuditTrail, patient: str) -> list[str]:
    """Five accesses to `patient`'s record, in time order: doctor read, own read, nurse search,
    doctor emergency read, own create; plus noise on another patient."""
    ids = [
        trail.record(read_record(patient, 0, data_titles={"Observation/o0": "Glycémie"}))[0],
        trail.record(read_record(patient, 10, actor=patient_actor(), actor_patients=[patient]))[0],
        trail.record(AuditRecord("search-type", 200, actor=NURSE, query=f"Observation?patient={patient}",
                                 patients=[patient], data_references=["Observation/o1"],
                                 recorded=read_record(patient, 20).recorded))[0],
        trail.record(read_record(patient, 30, emergency=True))[0],
        trail.record(AuditRecord("create", 201, actor=patient_actor(), actor_patients=[patient],
                                 resource_type="DocumentReference", resource_id="d1", patients=[patient],
                                 recorded=read_record(patient, 40).recorded))[0],
    ]
    trail.record(read_record(f"{patient}-neighbour", 50))
    return ids


def test_newest_first_with_readable_summaries(trail: AuditTrail, patient: str, accesses: list[str]) -> None:
    bundle = trail.access_history(patient, [], BASE)

    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["link"] == [{"relation": "self", "url": f"{BASE}/{patient}/$access-history"}]
    assert [e["resource"]["id"] for e in bundle["entry"]] == accesses[::-1]
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"{BASE}/AuditEvent/{i}" for i in accesses[::-1]]
    assert all(e["search"]["mode"] == "match" for e in bundle["entry"])

    newest, emergency, search, own_read, doctor_read = (summary_of(e) for e in bundle["entry"])
    assert newest["self"] is True and newest["how"] == "create"
    assert emergency["emergency"] is True
    assert emergency["text"].endswith("as an emergency access")
    assert search["how"] == "search-type" and search["who"] == "Anne Leroy"
    assert search["rpps"] == {"system": "https://rpps.esante.gouv.fr", "value": "10009999999"}
    assert own_read["self"] is True
    assert doctor_read == {
        "text": "2025-03-01T08:00:00.000Z: Jean Dupont (RPPS 10001234567, Médecin, organisation FINESS 750712184) "
                "read Glycémie using logiciel-cabinet",
        "when": "2025-03-01T08:00:00.000Z",
        "how": "read",
        "who": "Jean Dupont",
        "rpps": {"system": "https://rpps.esante.gouv.fr", "value": "10001234567"},
        "profession": {"system": "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/"
                                 "TRE-G15-ProfessionSante", "code": "10", "display": "Médecin"},
        "organization": {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1750712184"},   # IDNST: 1 + FINESS
        "software": "logiciel-cabinet",
        "what": "Glycémie",
        "emergency": False,
        "refused": False,
        "self": False,
    }


def test_exclude_self_drops_the_patients_own_accesses(trail: AuditTrail, patient: str,
                                                      accesses: list[str]) -> None:
    bundle = trail.access_history(patient, [("exclude-self", "true")], BASE)
    assert [e["resource"]["id"] for e in bundle["entry"]] == [accesses[3], accesses[2], accesses[0]]


def test_paging_follows_next_links_with_a_keyset_cursor(trail: AuditTrail, patient: str,
                                                        accesses: list[str]) -> None:
    seen: list[str] = []
    params: list[tuple[str, str]] = [("_count", "2")]
    pages = 0
    while True:
        bundle = trail.access_history(patient, params, BASE)
        pages += 1
        seen += [e["resource"]["id"] for e in bundle["entry"]]
        link = next_link(bundle)
        if link is None:
            break
        assert link.startswith(f"{BASE}/{patient}/$access-history?_count=2&_cursor=")
        params = params_of(link)
        # a write between pages does not shift the pages already served (keyset, not offset)
        trail.record(read_record(patient, 99))
    assert pages == 3
    assert seen == accesses[::-1]


def test_since_keeps_recent_accesses(trail: AuditTrail, patient: str, accesses: list[str]) -> None:
    bundle = trail.access_history(patient, [("_since", "2025-03-01T08:20:00Z")], BASE)
    assert [e["resource"]["id"] for e in bundle["entry"]] == accesses[:1:-1]
    by_date = trail.access_history(patient, [("_since", "2025-03-02")], BASE)
    assert by_date["entry"] == []


def test_other_patients_accesses_never_show(trail: AuditTrail, patient: str, accesses: list[str]) -> None:
    bundle = trail.access_history(f"{patient}-neighbour", [], BASE)
    assert len(bundle["entry"]) == 1
    assert bundle["entry"][0]["resource"]["id"] not in accesses


def test_bare_patient_id_is_accepted(trail: AuditTrail, patient: str, accesses: list[str]) -> None:
    bundle = trail.access_history(patient.removeprefix("Patient/"), [("_count", "1")], BASE)
    assert [e["resource"]["id"] for e in bundle["entry"]] == [accesses[-1]]


def test_a_refused_access_shows_as_refused(trail: AuditTrail, patient: str) -> None:
    trail.record(AuditRecord("read", 403, actor=DOCTOR, patients=[patient], consent_denied=True,
                             consent_references=["Consent/c1"]))
    [entry] = trail.access_history(patient, [], BASE)["entry"]
    summary = summary_of(entry)
    assert summary["refused"] is True
    assert summary["how"] == "consent-refused"


@pytest.mark.parametrize(("name", "value"), [("_count", "many"), ("_since", "yesterday"),
                                             ("exclude-self", "yes"), ("_cursor", "%%%")])
def test_invalid_parameters_are_400(trail: AuditTrail, patient: str, name: str, value: str) -> None:
    with pytest.raises(FhirError) as caught:
        trail.access_history(patient, [(name, value)], BASE)
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == (name,)
