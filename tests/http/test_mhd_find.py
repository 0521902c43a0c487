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
    OTHER_PATIENT_ID,
    PATIENT_ID,
    PATIENT_INS,
    PHOTO,
    REMPLACEMENT,
    RFC3986,
    diagnostics,
    entry_of,
    example,
    for_patient,
    fresh,
    load_patients,
    practitioner,
    practitioner_role,
    provided_document,
    search_ids,
    with_author,
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


AUTHOR_ORG = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-authorOrg"
CHU_IDNST = "urn:oid:1.2.250.1.71.4.2.2|1350000139"       # the contained authorOrg of the BIOLOGIE example


def submission_sets(client, params: dict) -> list[dict]:
    response = client.get("/fhir/List", params=params)
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]


def test_find_submission_sets_by_contained_author_organisation(client, documents):
    """The authorOrg extension sits on List.source (PDSm profile), its Organization contained: the
    server names it by identifier in the reference, which authorOrg:identifier searches."""
    found = submission_sets(client, {**MINE, "authorOrg:identifier": CHU_IDNST})
    assert [s["entry"][0]["item"]["reference"] for s in found] == [f"DocumentReference/{documents[BIOLOGIE]['id']}"]
    author_org = found[0]["source"]["extension"][0]
    assert author_org["url"] == AUTHOR_ORG
    assert author_org["valueReference"] == {"reference": "#organisation-auteur", "identifier": {
        "system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1350000139"}}
    assert submission_sets(client, {**MINE, "authorOrg:identifier": "urn:oid:1.2.250.1.71.4.2.2|1999999999"}) == []


def test_find_submission_sets_by_author_organisation_reference(client, documents):
    bundle = for_patient(fresh(example(ORDONNANCE)), OTHER_PATIENT_ID)
    entry_of(bundle, "List")["resource"]["source"]["extension"] = [
        {"url": AUTHOR_ORG, "valueReference": {"reference": "Organization/cabinet-bertrand"}}]
    document = provided_document(client, bundle)
    found = submission_sets(client, {"patient": OTHER_PATIENT_ID, "status": "current",
                                     "authorOrg": "Organization/cabinet-bertrand"})
    assert [s["entry"][0]["item"]["reference"] for s in found] == [f"DocumentReference/{document['id']}"]


# -- author.given / author.family (the author is contained) --------------------------------------------
THEIRS = {"patient": OTHER_PATIENT_ID, "status": "current"}


@pytest.fixture(scope="module")
def authored(client, documents) -> dict[str, str]:
    """Documents of the second patient by named, contained authors; name -> DocumentReference id."""
    jean = with_author(fresh(example(ORDONNANCE)), practitioner_role("auteur", "ps", "10003456786"),
                       practitioner("ps", "Jean", "Dupont", "10003456786"))
    jeanne = with_author(fresh(example(BIOLOGIE)), practitioner("auteur", "Jeanne", "Dupond", "10107654328"))
    helene = with_author(fresh(example(CR)), practitioner_role("role", "ps", "10101234564"),
                         practitioner("ps", "Hélène", "Lefèvre", "10101234564"))
    # the validating professional is contained too, but is no author
    validator = practitioner("validateur", "Zoé", "Martin", "10199999999")
    document = entry_of(helene, "DocumentReference")["resource"]
    document["contained"].append(validator)
    document["authenticator"] = {"reference": "#validateur"}
    return {name: provided_document(client, for_patient(bundle, OTHER_PATIENT_ID))["id"]
            for name, bundle in (("jean", jean), ("jeanne", jeanne), ("helene", helene))}


@pytest.mark.parametrize(("params", "expected"), [
    ({"author.given": "Jean", "author.family": "Dupont"}, ["jean"]),
    ({"author.given": "jean"}, ["jean", "jeanne"]),                  # strings match the start, any case
    ({"author.given:exact": "Jean"}, ["jean"]),
    ({"author.family": "DUPON"}, ["jean", "jeanne"]),
    ({"author.family": "lefevre"}, ["helene"]),                       # accents folded
    ({"author.given": "Hélène", "author.family": "Lefèvre"}, ["helene"]),
    ({"author.given": "Zoé"}, []),                                    # contained, but not an author
    ({"author.family": "Dupont,Lefevre"}, ["jean", "helene"]),
    ({"author.given": "Paul"}, []),
])
def test_author_name_of_contained_authors(client, authored, params, expected):
    assert search_ids(client, {**THEIRS, **params}) == {authored[name] for name in expected}


def test_author_name_in_post_search_xml_and_compartment(client, authored):
    response = client.post("/fhir/DocumentReference/_search",
                           data={**THEIRS, "author.given": "Jean", "author.family": "Dupont"})
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [authored["jean"]]
    response = client.get("/fhir/DocumentReference", params={**THEIRS, "author.family": "Dupont"},
                          headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 200 and authored["jean"].encode() in response.content
    response = client.get(f"/fhir/Patient/{OTHER_PATIENT_ID}/DocumentReference",
                          params={"status": "current", "author.family": "Dupond"})
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [authored["jeanne"]]


def test_author_name_needs_patient_and_status(client, authored):
    response = client.get("/fhir/DocumentReference", params={"author.given": "Jean", "author.family": "Dupont"})
    assert response.status_code == 400
    assert "ITI-67" in diagnostics(response.json())


def test_find_responses_carry_their_total(client, authored):
    bundle = client.get("/fhir/DocumentReference", params={**THEIRS, "author.family": "Dupon"}).json()
    assert bundle["total"] == 2
    assert client.get("/fhir/DocumentReference", params={**THEIRS, "_total": "none"}).json().get("total") is None


# -- the find responses conform to the PDSm find-response profiles ---------------------------------------
PDSM_PROFILES = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
FIND_DOCUMENTS_RESPONSE = PDSM_PROFILES + "pdsm-find-documentreferences-comprehensive-response"
FIND_LISTS_RESPONSE = PDSM_PROFILES + "pdsm-find-lists-response"


def validation_errors(client, resource: dict, profile: str) -> list[dict]:
    response = client.post("/fhir/Bundle/$validate", json=resource, params={"profile": profile})
    assert response.status_code == 200, response.text
    return [i for i in response.json()["issue"] if i["severity"] in ("error", "fatal")]


def test_iti67_response_conforms_to_the_pdsm_profile(client, documents):
    answer = client.get("/fhir/DocumentReference", params={**MINE, "_count": "3"}).json()
    assert len(answer["entry"]) == 3 and answer["total"] == 5
    assert validation_errors(client, answer, FIND_DOCUMENTS_RESPONSE) == []
    empty = client.get("/fhir/DocumentReference", params={**MINE, "type": "http://loinc.org|00000-0"}).json()
    assert empty["total"] == 0 and validation_errors(client, empty, FIND_DOCUMENTS_RESPONSE) == []


def test_iti66_response_conforms_to_the_pdsm_profile(client, documents):
    for code in ("submissionset", "folder"):
        answer = client.get("/fhir/List", params={**MINE, "code": f"{MHD_LISTS}|{code}"}).json()
        assert answer["entry"] and validation_errors(client, answer, FIND_LISTS_RESPONSE) == []


def test_find_response_profile_refuses_what_is_not_a_find_response(client, documents):
    without_total = client.get("/fhir/DocumentReference", params={**MINE, "_total": "none"}).json()
    issues = validation_errors(client, without_total, FIND_DOCUMENTS_RESPONSE)
    assert [i["expression"] for i in issues] == [["Bundle.total"]]
    answer = client.get("/fhir/DocumentReference", params=MINE).json()
    del answer["entry"][0]["fullUrl"]
    answer["type"] = "collection"
    expressions = {e for i in validation_errors(client, answer, FIND_DOCUMENTS_RESPONSE) for e in i["expression"]}
    assert {"Bundle.type", "Bundle.entry[0].fullUrl"} <= expressions


def test_capability_statement_declares_the_author_name_parameters(client):
    statement = client.get("/fhir/metadata").json()
    rest = statement["rest"][0]
    documents = next(r for r in rest["resource"] if r["type"] == "DocumentReference")
    notes = {p["name"]: p.get("documentation", "") for p in documents["searchParam"]}
    assert "author.given" in notes["author-given"] and "author.family" in notes["author-family"]
    lists = next(r for r in rest["resource"] if r["type"] == "List")
    assert "authorOrg:identifier" in next(p.get("documentation", "") for p in lists["searchParam"]
                                          if p["name"] == "authorOrg")
    assert "application/xml-patch+xml" in statement["patchFormat"]
