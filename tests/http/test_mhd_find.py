"""ITI-67 Find Document References and ITI-66 Find Document Lists over the French examples: the
patient and the status are required; every PDSm search parameter works, in GET and POST
`_search`, in JSON and XML."""

from __future__ import annotations

import pytest

from tests.http.test_mhd_support import (
    BIOLOGIE,
    CR,
    IMAGERIE,
    IS_ARCHIVED,
    ORDONNANCE,
    PATIENT_ID,
    PATIENT_INS,
    PHOTO,
    REMPLACEMENT,
    RFC3986,
    diagnostics,
    example,
    load_patients,
    search_ids,
)

NOS = "https://mos.esante.gouv.fr/NOS/"
MHD_LISTS = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
MINE = {"patient": PATIENT_ID, "status": "current"}


@pytest.fixture(scope="module")
def documents(client) -> dict[str, dict]:
    """The examples, loaded as `make run` does; name -> stored DocumentReference."""
    load_patients(client)
    stored = {}
    for name in (CR, ORDONNANCE, BIOLOGIE, IMAGERIE, REMPLACEMENT):
        response = client.post("/fhir", json=example(name))
        assert response.status_code == 200, response.text
        stored[name] = next(e["resource"] for e in response.json()["entry"]
                            if e["resource"]["resourceType"] == "DocumentReference")
    response = client.post("/fhir/DocumentReference", json=example(PHOTO))
    assert response.status_code == 201, response.text
    stored[PHOTO] = response.json()
    return stored


def ids(documents: dict, *names: str) -> set[str]:
    return {documents[n]["id"] for n in names}


def test_patient_and_status(client, documents):
    assert search_ids(client, MINE) == ids(documents, ORDONNANCE, BIOLOGIE, IMAGERIE, REMPLACEMENT, PHOTO)
    assert search_ids(client, {"patient": PATIENT_ID, "status": "superseded"}) == ids(documents, CR)
    by_ins = {"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.8|{PATIENT_INS}", "status": "current"}
    assert search_ids(client, by_ins) == search_ids(client, MINE)


@pytest.mark.parametrize("params", [
    {"patient": PATIENT_ID},
    {"status": "current"},
    {"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.8|{PATIENT_INS}"},
    {"type": "http://loinc.org|57833-6"},
    {"patient": PATIENT_ID, "status": ""},
])
def test_patient_and_status_are_required(client, documents, params):
    response = client.get("/fhir/DocumentReference", params=params)
    assert response.status_code == 400
    assert "ITI-67" in diagnostics(response.json())
    response = client.post("/fhir/DocumentReference/_search", data=params)
    assert response.status_code == 400


def test_fetching_known_entries_by_id_is_not_a_find(client, documents):
    assert search_ids(client, {"_id": documents[CR]["id"]}) == ids(documents, CR)


@pytest.mark.parametrize(("params", "expected"), [
    ({"type": "http://loinc.org|57833-6"}, [ORDONNANCE]),
    ({"category": f"{NOS}TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument|30"}, [IMAGERIE]),
    ({"setting": f"{NOS}TRE_A01-CadreExercice/FHIR/TRE-A01-CadreExercice|AMBULATOIRE"}, [ORDONNANCE]),
    ({"facility": f"{NOS}TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite|SA07"}, [ORDONNANCE]),
    ({"format": f"{NOS}TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode|urn:ihe:iti:xds:2017:mimeTypeSufficient"},
     [PHOTO]),
    ({"security-label": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N"},
     [ORDONNANCE, BIOLOGIE, IMAGERIE, REMPLACEMENT, PHOTO]),
    ({"period-start": "ge2026-11-05"}, [ORDONNANCE, BIOLOGIE, PHOTO]),
    ({"period-end": "2026-11-09"}, [REMPLACEMENT]),
    ({"creation": "2026-11-12"}, [ORDONNANCE]),
    ({"date": "ge2026-11-12"}, [ORDONNANCE, PHOTO]),
    ({"period": "lt2026-11-03"}, [REMPLACEMENT]),
    ({"event": "urn:oid:2.16.840.1.113883.6.3|J18.9"}, [REMPLACEMENT]),
    ({"contenttype": "image/png"}, [PHOTO]),
    ({"isArchived:not": "true"}, [ORDONNANCE, BIOLOGIE, IMAGERIE, REMPLACEMENT, PHOTO]),
    ({"identifier": f"{RFC3986}|urn:oid:1.2.250.1.213.1.4.8.99999.0"}, []),
])
def test_pdsm_search_parameters(client, documents, params, expected):
    assert search_ids(client, {**MINE, **params}) == ids(documents, *expected)


def test_identifier_and_relatesto(client, documents):
    unique = documents[BIOLOGIE]["masterIdentifier"]["value"]
    assert search_ids(client, {**MINE, "identifier": f"{RFC3986}|{unique}"}) == ids(documents, BIOLOGIE)
    replaced = f"DocumentReference/{documents[CR]['id']}"
    assert search_ids(client, {**MINE, "relatesto": replaced}) == ids(documents, REMPLACEMENT)


def test_archived_documents(client, documents):
    target = documents[BIOLOGIE]
    patch = [{"op": "add", "path": "/extension", "value": [{"url": IS_ARCHIVED, "valueBoolean": True}]}]
    response = client.patch(f"/fhir/DocumentReference/{target['id']}", json=patch,
                            headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code == 200, response.text
    assert search_ids(client, {**MINE, "isArchived": "true"}) == ids(documents, BIOLOGIE)
    assert documents[BIOLOGIE]["id"] not in search_ids(client, {**MINE, "isArchived:not": "true"})
    undo = [{"op": "remove", "path": "/extension"}]
    client.patch(f"/fhir/DocumentReference/{target['id']}", json=undo,
                 headers={"Content-Type": "application/json-patch+json"})


def test_post_search_and_xml(client, documents):
    response = client.post("/fhir/DocumentReference/_search", data={**MINE, "type": "http://loinc.org|11502-2"})
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json()["entry"]} == ids(documents, BIOLOGIE)
    response = client.get("/fhir/DocumentReference", params={**MINE, "type": "http://loinc.org|11502-2"},
                          headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+xml")
    assert documents[BIOLOGIE]["id"].encode() in response.content
    response = client.get("/fhir/DocumentReference", params={"patient": PATIENT_ID},
                          headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 400 and b"ITI-67" in response.content


def test_compartment_search_names_the_patient(client, documents):
    response = client.get(f"/fhir/Patient/{PATIENT_ID}/DocumentReference", params={"status": "current"})
    assert response.status_code == 200
    assert len(response.json()["entry"]) == 5


# -- ITI-66 -------------------------------------------------------------------------------------------
def test_find_submission_sets_and_folders(client, documents):
    params = {"patient": PATIENT_ID, "status": "current", "code": f"{MHD_LISTS}|submissionset"}
    response = client.get("/fhir/List", params=params)
    assert response.status_code == 200
    assert len(response.json()["entry"]) == 6
    params["code"] = f"{MHD_LISTS}|folder"
    folders = client.get("/fhir/List", params=params).json()["entry"]
    assert [f["resource"]["title"] for f in folders] == ["Pneumopathie de novembre 2026"]
    assert folders[0]["resource"]["entry"][0]["item"]["reference"] == f"DocumentReference/{documents[IMAGERIE]['id']}"
    params = {"patient": PATIENT_ID, "status": "current",
              "designationType": f"{NOS}TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite|SA07"}
    assert len(client.get("/fhir/List", params=params).json()["entry"]) == 1


def test_find_lists_needs_patient_and_status(client, documents):
    response = client.get("/fhir/List", params={"code": f"{MHD_LISTS}|submissionset"})
    assert response.status_code == 400
    assert "ITI-66" in diagnostics(response.json())
    assert client.get("/fhir/List", params={"patient": PATIENT_ID}).status_code == 200    # not an MHD search
