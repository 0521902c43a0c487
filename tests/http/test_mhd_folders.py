"""Folders (classeurs) in ITI-65: a later submission files documents published earlier into a new
folder or a new version of an existing one; the submission set records what it filed; documents of
another patient, unknown documents and lists that are not folders of the patient are refused."""

from __future__ import annotations

import copy

import pytest

from tests.http.test_mhd_support import (
    BIOLOGIE,
    CR,
    FHIR_JSON,
    IMAGERIE,
    OTHER_PATIENT_ID,
    PATIENT_ID,
    RFC3986,
    diagnostics,
    entry_of,
    example,
    expressions,
    for_patient,
    fresh,
    load_patients,
    provide,
    provided_document,
    unique_oid,
)

REFILING = "08-iti65-reclassement-classeur.json"
FOLDER, PNEUMOLOGIE = "exemple-classeur-suivi-respiratoire", "exemple-classeur-pneumologie"
SUBMISSION_SET, FOLDER_ENTRY = 0, 1


@pytest.fixture(scope="module")
def documents(client) -> dict[str, dict]:
    """The examples 03 (biologie) and 04 (imagerie, in the pneumologie folder), a CR, and a document
    of another patient; name -> stored DocumentReference."""
    load_patients(client)
    stored = {}
    for name in (BIOLOGIE, IMAGERIE):
        response = provide(client, example(name))
        assert response.status_code == 200, response.text
        stored[name] = next(e["resource"] for e in response.json()["entry"]
                            if e["resource"]["resourceType"] == "DocumentReference")
    stored[CR] = provided_document(client, fresh(example(CR)))
    stored["other"] = provided_document(client, for_patient(fresh(example(CR)), OTHER_PATIENT_ID))
    return stored


def read(client, reference: str) -> dict:
    return client.get(f"/fhir/{reference}", headers={"Accept": FHIR_JSON}).json()


def items(resource: dict) -> list[str]:
    return [e["item"]["reference"] for e in resource.get("entry", [])]


def refiling(*references: str, folder_id: str = FOLDER) -> dict:
    """A re-filing submission (example 08 made new) putting `references` in folder `folder_id`."""
    bundle = copy.deepcopy(example(REFILING))
    submission = bundle["entry"][SUBMISSION_SET]
    submission["request"].pop("ifNoneExist")
    submission["resource"]["identifier"][0]["value"] = unique_oid()
    folder = bundle["entry"][FOLDER_ENTRY]
    folder["request"]["url"] = f"List/{folder_id}"
    folder["resource"]["id"] = folder_id
    folder["resource"]["entry"] = [{"item": {"reference": r}} for r in references]
    return bundle


def stored_submission_set(client, response) -> dict:
    assert response.status_code == 200, response.text
    return read(client, response.json()["entry"][SUBMISSION_SET]["response"]["location"].split("/_history")[0])


def test_example_files_published_documents_in_a_new_folder(client, documents):
    response = provide(client, example(REFILING))
    submission = stored_submission_set(client, response)
    folder = read(client, f"List/{FOLDER}")
    filed = [f"DocumentReference/{documents[n]['id']}" for n in (IMAGERIE, BIOLOGIE)]
    assert items(folder) == filed                         # conditional references resolved
    assert items(submission) == [f"List/{FOLDER}", *filed]      # the submission set records the filing
    assert [i for i in folder["identifier"] if i.get("use") == "official"]
    # ITI-66: the folder is found by what it holds
    found = client.get("/fhir/List", params={"patient": PATIENT_ID, "status": "current", "code": "folder",
                                              "item": filed[1]}).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [FOLDER]


def test_existing_folder_gets_a_published_document(client, documents):
    before = read(client, f"List/{PNEUMOLOGIE}")
    added = f"DocumentReference/{documents[CR]['id']}"
    response = provide(client, refiling(*items(before), added, folder_id=PNEUMOLOGIE))
    submission = stored_submission_set(client, response)
    folder = read(client, f"List/{PNEUMOLOGIE}")
    assert items(folder) == [*items(before), added]
    assert items(submission) == [f"List/{PNEUMOLOGIE}", added]      # only what was newly filed
    assert folder["meta"]["versionId"] == str(int(before["meta"]["versionId"]) + 1)
    official = [[i["value"] for i in r["identifier"] if i.get("use") == "official"] for r in (before, folder)]
    assert official[0] == official[1] and official[0]                  # the folder keeps its entryUUID


def test_document_of_another_patient_is_refused(client, documents):
    before = read(client, f"List/{PNEUMOLOGIE}")
    bundle = refiling(*items(before), f"DocumentReference/{documents['other']['id']}", folder_id=PNEUMOLOGIE)
    response = provide(client, bundle)
    assert response.status_code == 422
    where = f"Bundle.entry[{FOLDER_ENTRY}].resource.entry[{len(items(before))}].item"
    assert expressions(response.json()) == [where]
    assert "another patient" in diagnostics(response.json()) and OTHER_PATIENT_ID in diagnostics(response.json())
    assert read(client, f"List/{PNEUMOLOGIE}")["meta"]["versionId"] == before["meta"]["versionId"]
    unique = bundle["entry"][SUBMISSION_SET]["resource"]["identifier"][0]["value"]
    assert not client.get("/fhir/List", params={"identifier": f"{RFC3986}|{unique}"}).json().get("entry")


@pytest.mark.parametrize("reference", [
    "DocumentReference/n-existe-pas",
    f"DocumentReference?identifier={RFC3986}|urn:oid:1.2.250.1.999.404",
    "Observation/une-observation",
])
def test_unknown_document_is_refused(client, documents, reference):
    response = provide(client, refiling(reference, folder_id="classeur-inconnu"))
    assert response.status_code == 422
    assert expressions(response.json()) == [f"Bundle.entry[{FOLDER_ENTRY}].resource.entry[0].item"]


def test_only_folders_of_the_patient_are_updated(client, documents):
    submission_set = client.get("/fhir/List", params={"patient": PATIENT_ID, "status": "current",
                                                       "code": "submissionset"}).json()["entry"][0]["resource"]
    response = provide(client, refiling(f"DocumentReference/{documents[CR]['id']}", folder_id=submission_set["id"]))
    assert response.status_code == 422
    assert expressions(response.json()) == [f"Bundle.entry[{FOLDER_ENTRY}].request.url"]
    theirs = for_patient(refiling(f"DocumentReference/{documents['other']['id']}", folder_id="classeur-autre"),
                         OTHER_PATIENT_ID)
    assert provide(client, theirs).status_code == 200
    mine = refiling(f"DocumentReference/{documents[CR]['id']}", folder_id="classeur-autre")
    response = provide(client, mine)
    assert response.status_code == 422
    assert "is a folder of Patient/autre-patient" in diagnostics(response.json())


def test_new_and_published_documents_in_one_folder(client, documents):
    bundle = fresh(example(CR))
    document = entry_of(bundle, "DocumentReference")
    folder = copy.deepcopy(refiling(document["fullUrl"], f"DocumentReference/{documents[BIOLOGIE]['id']}",
                                    folder_id="classeur-mixte")["entry"][FOLDER_ENTRY])
    folder["fullUrl"] = "urn:uuid:c3a91e57-2b84-4d0f-9f16-5e7d28a4b1ff"
    bundle["entry"].append(folder)
    bundle["entry"][0]["resource"]["entry"].append({"item": {"reference": folder["fullUrl"]}})
    submission = stored_submission_set(client, provide(client, bundle))
    stored = read(client, "List/classeur-mixte")
    new = next(i for i in items(stored) if i != f"DocumentReference/{documents[BIOLOGIE]['id']}")
    assert items(submission) == [new, "List/classeur-mixte", f"DocumentReference/{documents[BIOLOGIE]['id']}"]
