"""The CapabilityStatement tells the truth: what `GET /fhir/metadata` declares is exercised over
HTTP, driven by the statement itself and the R4 definitions it points to, so that a conformance
harness (Touchstone, Inferno, TestScript engines) or an integrator trusting it meets no lie.

Each check collects every offender before asserting: one failure lists every lie at once.
Lies whose fix belongs to code owned by other teams are listed in KNOWN_LIES with their owner;
the check xfails while exactly those remain, and fails as soon as one of them is fixed (so that
it is removed from the list) or a new one appears.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from fhir_server.audit.verify import verify_chains
from fhir_server.config import Settings
from fhir_server.definitions import PRIMITIVE_TYPES, Definitions, load_definitions
from fhir_server.definitions.paths import PROJECT_ROOT
from fhir_server.engine.model import new_id
from tests.documents import pdsm_document
from tests.http.conftest import running_app

JSON = "application/fhir+json"
STRICT = {"Prefer": "handling=strict"}
MISSING_ID = "capability-truth-missing"

UNKNOWN_INCLUDE = "Patient:capability-truth-unknown"
# Lies still present, by check: {subject pattern: owner and reason}. Empty: the statement tells the truth.
KNOWN_LIES: dict[str, dict[str, str]] = {}


def assert_truthful(check: str, offenders: list[str]) -> None:
    """No offender ("subject: problem") beyond the known lies of `check`, whose patterns match
    subjects; xfail while known ones remain."""
    known = KNOWN_LIES.get(check, {})
    subjects = [o.split(": ", 1)[0] for o in offenders]
    unexpected = sorted(o for o, s in zip(offenders, subjects, strict=True)
                        if not any(fnmatch(s, pattern) for pattern in known))
    assert not unexpected, f"The CapabilityStatement lies ({check}), {len(unexpected)} offenders:\n" + \
        "\n".join(unexpected)
    fixed = [pattern for pattern in known if not any(fnmatch(s, pattern) for s in subjects)]
    assert not fixed, f"Known lies no longer seen, remove them from KNOWN_LIES[{check!r}]: {fixed}"
    if offenders:
        pytest.xfail(f"known lies ({check}), owned elsewhere:\n" +
                     "\n".join(f"{pattern}: {reason}" for pattern, reason in known.items()))


# -- fixtures -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(mongo_uri: str, settings: Settings, issuer_dir: Path) -> Iterator[TestClient]:
    """A trusted back-end with every system scope, on a server that publishes its conformance
    resources (the canonicals the statement names must be resolvable)."""
    with running_app(mongo_uri, settings, issuer_dir, env={"FHIR_PUBLISH_CONFORMANCE": "on"}) as test_client:
        test_client.headers["Accept"] = JSON
        yield test_client


@pytest.fixture(scope="module")
def statement(client: TestClient) -> dict:
    response = client.get("/fhir/metadata")
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def rest(statement: dict) -> dict:
    return statement["rest"][0]


@pytest.fixture(scope="module")
def definitions() -> Definitions:
    return load_definitions()


@pytest.fixture(scope="module")
def search_parameters(definitions: Definitions) -> dict[str, dict]:
    return {sp["url"]: sp for sp in definitions.search_parameters if sp.get("url")}


# -- HTTP helpers -------------------------------------------------------------------------------------
def diagnostics(response: Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    issues = body.get("issue", []) if isinstance(body, dict) else []
    return "; ".join(i.get("diagnostics") or i.get("code", "") for i in issues)[:300]


def failure(response: Response, *expected: int) -> str | None:
    """None when the status is one of `expected`, else what went wrong."""
    if response.status_code in expected:
        return None
    return f"{response.status_code} {diagnostics(response)}"


def outcome_warnings(bundle: dict) -> list[str]:
    return [issue.get("diagnostics", issue.get("code", "")) for entry in bundle.get("entry", [])
            if entry.get("search", {}).get("mode") == "outcome" for issue in entry["resource"].get("issue", [])]


def is_unknown_operation(response: Response) -> bool:
    issues = response.json().get("issue", []) if response.status_code == 404 else []
    return any(issue.get("code") == "not-supported" for issue in issues)


# -- minimal instances, from the required elements of the R4 definitions ---------------------------
PRIMITIVE_SAMPLES: dict[str, Any] = {
    "boolean": True, "integer": 1, "unsignedInt": 1, "positiveInt": 1, "decimal": 1,
    "date": "2020-01-01", "dateTime": "2020-01-01", "instant": "2020-01-01T00:00:00Z", "time": "00:00:00",
    "uri": "http://example.org/x", "url": "http://example.org/x", "canonical": "http://example.org/x",
    "oid": "urn:oid:1.2.3", "uuid": "urn:uuid:6a3e0a2c-5d54-4f4e-9d4a-0c1f3c1b2a11", "id": "x",
    "base64Binary": "AA==", "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
}
# Data types whose definition requires nothing: one simple element makes them non-empty.
COMPLEX_SAMPLES: dict[str, dict] = {
    "Reference": {"display": "x"}, "CodeableConcept": {"text": "x"},
    "Coding": {"system": "http://example.org", "code": "x"}, "Identifier": {"value": "x"},
    "Period": {"start": "2020-01-01"}, "Quantity": {"value": 1}, "Money": {"value": 1, "currency": "EUR"},
    "Attachment": {"contentType": "text/plain"}, "HumanName": {"text": "x"}, "Address": {"text": "x"},
    "ContactPoint": {"value": "x"}, "Timing": {"event": ["2020-01-01"]}, "Range": {"low": {"value": 1}},
    "Ratio": {"numerator": {"value": 1}}, "Dosage": {"text": "x"}, "ContactDetail": {"name": "x"},
}


def minimal_instance(definitions: Definitions, resource_type: str) -> dict:
    """Every element the type requires (min >= 1), recursively, with a sample value; codes with a
    required binding take the first code the official JSON schema allows."""
    return {"resourceType": resource_type, **_required_elements(definitions, resource_type, resource_type)}


def _required_elements(definitions: Definitions, path: str, schema_name: str) -> dict:
    structure = definitions.base_types[path.split(".")[0]]
    properties = definitions.schema["definitions"][schema_name].get("properties", {})
    out: dict[str, Any] = {}
    for element in structure["snapshot"]["element"]:
        name = element["path"][len(path) + 1:]
        if not element["path"].startswith(path + ".") or "." in name or element.get("min", 0) < 1:
            continue
        reference = element.get("contentReference")
        code = "BackboneElement" if reference else element["type"][0]["code"]
        child_path = reference.lstrip("#") if reference else element["path"]
        json_name = name[:-3] + code[0].upper() + code[1:] if name.endswith("[x]") else name
        value = _sample(definitions, code, child_path, properties.get(json_name, {}))
        out[json_name] = value if element.get("max") == "1" else [value]
    return out


def _sample(definitions: Definitions, code: str, path: str, schema_property: dict) -> Any:
    item = schema_property.get("items", schema_property)
    if item.get("enum"):
        return item["enum"][0]
    if code.startswith("http://hl7.org/fhirpath/System."):
        return "x"
    if code in PRIMITIVE_SAMPLES:
        return PRIMITIVE_SAMPLES[code]
    if code in PRIMITIVE_TYPES:
        return "x"
    if code in ("BackboneElement", "Element"):
        return _required_elements(definitions, path, item["$ref"].rsplit("/", 1)[-1]) or {"id": "x"}
    if code == "Resource":
        return {"resourceType": "Basic", "code": {"text": "x"}}
    return _required_elements(definitions, code, code) or COMPLEX_SAMPLES.get(code, {"id": "x"})


def _without_id(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "id"}


def example(name: str) -> dict:
    return _without_id(json.loads((PROJECT_ROOT / "examples" / name).read_text()))


# Types whose business rules ask for more than their R4 required elements.
SPECIFIC_INSTANCES: dict[str, Callable[[], dict]] = {
    "AuditEvent": lambda: example("auditevent-creation-vaccination.json"),
    "Immunization": lambda: example("immunization-dtcap.json"),
    "Communication": lambda: example("communication-message-professionnel.json"),
    "DocumentReference": lambda: _without_id(pdsm_document(new_id(), "capability-truth",
                                                           "Practitioner/capability-truth")),
    "Subscription": lambda: {"resourceType": "Subscription", "status": "requested", "reason": "capability truth",
                             "criteria": "Basic?code=http://example.org|never", "channel": {"type": "websocket"}},
    # retired: stored, never compiled into the search registry (it would change the statement)
    "SearchParameter": lambda: {"resourceType": "SearchParameter", "url": "http://example.org/SearchParameter/x",
                                "name": "x", "status": "retired", "description": "x", "code": "x",
                                "base": ["Basic"], "type": "token", "expression": "Basic.code"},
}
# The write interactions are exercised on these: plain types of each kind (identity, clinical,
# conformance, containers, Binary) and every type a business module has rules for.
WRITE_SAMPLE = ("Patient", "Practitioner", "Organization", "Observation", "Basic", "Questionnaire", "ValueSet",
                "Binary", "Bundle", "Parameters", "Consent", "Appointment", "Composition", "List",
                *SPECIFIC_INSTANCES)


def instance_of(resource_type: str) -> dict:
    specific = SPECIFIC_INSTANCES.get(resource_type)
    return specific() if specific else minimal_instance(load_definitions(), resource_type)


# -- 1. interactions ----------------------------------------------------------------------------------
def declares(entry: dict, interaction: str) -> bool:
    return any(i.get("code") == interaction for i in entry.get("interaction", []))


def entries(rest: dict) -> dict[str, dict]:
    return {entry["type"]: entry for entry in rest["resource"]}


READ_SIDE = {"read": "", "vread": "/_history/1", "history-instance": "/_history"}


def test_every_type_routes_its_declared_read_interactions(client: TestClient, rest: dict) -> None:
    """For all types: a missing instance is `not-found` (the interaction exists), never refused as
    unsupported, and the type's history answers a history Bundle."""
    offenders = []
    for resource_type, entry in entries(rest).items():
        for interaction, suffix in READ_SIDE.items():
            if declares(entry, interaction):
                response = client.get(f"/fhir/{resource_type}/{MISSING_ID}{suffix}")
                codes = [i.get("code") for i in response.json().get("issue", [])]
                if response.status_code != 404 or codes != ["not-found"]:
                    offenders.append(f"{resource_type} {interaction}: {failure(response)}")
        if declares(entry, "history-type"):
            response = client.get(f"/fhir/{resource_type}/_history", params={"_count": "1"})
            if response.status_code != 200 or response.json().get("type") != "history":
                offenders.append(f"{resource_type} history-type: {failure(response)}")
    assert_truthful("read interactions", offenders)


@dataclass
class Stored:
    """The instance the claims of one resource entry are proven on (as last returned)."""

    entry: dict
    id: str
    resource: dict

    @property
    def type(self) -> str:
        return self.entry["type"]

    @property
    def url(self) -> str:
        return f"/fhir/{self.type}/{self.id}"

    def replace(self, response: Response) -> Response:
        if response.status_code in (200, 201) and response.content:
            self.resource = response.json()
        return response


Proof = Callable[[TestClient, Stored], "str | None"]


def _read(client: TestClient, stored: Stored) -> str | None:
    response = client.get(stored.url)
    return failure(response, 200) or (None if response.json().get("id") == stored.id else "another resource")


def _vread(client: TestClient, stored: Stored) -> str | None:
    return failure(client.get(f"{stored.url}/_history/1"), 200)


def _update(client: TestClient, stored: Stored) -> str | None:
    return failure(stored.replace(client.put(stored.url, json=stored.resource)), 200)


def _patch(client: TestClient, stored: Stored) -> str | None:
    operations = [{"op": "add", "path": "/meta/tag", "value": [{"system": "http://example.org", "code": "x"}]}]
    response = client.patch(stored.url, content=json.dumps(operations),
                            headers={"Content-Type": "application/json-patch+json"})
    return failure(stored.replace(response), 200)


def _history(path: str) -> Proof:
    def prove(client: TestClient, stored: Stored) -> str | None:
        response = client.get(path.format(url=stored.url, type=stored.type), params={"_count": "1"})
        kind = response.json().get("type") if response.status_code == 200 else None
        return failure(response, 200) or (None if kind == "history" else f"a {kind} Bundle")
    return prove


def _search(client: TestClient, stored: Stored) -> str | None:
    response = client.get(f"/fhir/{stored.type}", params={"_id": stored.id})
    if response.status_code != 200:
        return failure(response, 200)
    found = [e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"]
    return None if found == [stored.id] else f"found {found}"


def _version_aware_update(client: TestClient, stored: Stored) -> str | None:
    return failure(client.put(stored.url, json=stored.resource, headers={"If-Match": 'W/"999999"'}), 412)


def _update_create(client: TestClient, stored: Stored) -> str | None:
    resource_id = new_id()
    resource = {**instance_of(stored.type), "id": resource_id}
    return failure(client.put(f"/fhir/{stored.type}/{resource_id}", json=resource), 201)


def _conditional_create(client: TestClient, stored: Stored) -> str | None:
    response = client.post(f"/fhir/{stored.type}", json=instance_of(stored.type),
                           headers={"If-None-Exist": f"_id={stored.id}"})
    return failure(response, 200)           # the existing one; a 201 would be a duplicate


def _conditional_update(client: TestClient, stored: Stored) -> str | None:
    response = client.put(f"/fhir/{stored.type}", params={"_id": stored.id}, json=stored.resource)
    return failure(stored.replace(response), 200)


CONDITIONAL_READS = {"not-match": ("ETag", "If-None-Match"), "modified-since": ("Last-Modified", "If-Modified-Since")}


def _conditional_read(client: TestClient, stored: Stored) -> str | None:
    declared = stored.entry["conditionalRead"]
    current = client.get(stored.url)
    problems = []
    for kind, (validator, condition) in CONDITIONAL_READS.items():
        if declared in (kind, "full-support"):
            response = client.get(stored.url, headers={condition: current.headers.get(validator, "")})
            problems += [f"{kind}: {failure(response, 304)}"] if response.status_code != 304 else []
    return "; ".join(problems) or None


def _conditional_delete(client: TestClient, stored: Stored) -> str | None:
    created = client.post(f"/fhir/{stored.type}", json=instance_of(stored.type))
    if created.status_code != 201:
        return f"no instance to delete: {failure(created)}"
    response = client.delete(f"/fhir/{stored.type}", params={"_id": created.json()["id"]})
    gone = client.get(f"/fhir/{stored.type}/{created.json()['id']}")
    return failure(response, 200, 204) or failure(gone, 410)


def _delete(client: TestClient, stored: Stored) -> str | None:
    return failure(client.delete(stored.url), 200, 204) or failure(client.get(stored.url), 410)


# In this order: the instance is deleted last. Each claim: (name, is it declared?, proof).
CLAIMS: tuple[tuple[str, Callable[[dict], bool], Proof], ...] = (
    ("read", lambda e: declares(e, "read"), _read),
    ("update", lambda e: declares(e, "update"), _update),
    ("patch", lambda e: declares(e, "patch"), _patch),
    ("vread", lambda e: declares(e, "vread"), _vread),
    ("history-instance", lambda e: declares(e, "history-instance"), _history("{url}/_history")),
    ("history-type", lambda e: declares(e, "history-type"), _history("/fhir/{type}/_history")),
    ("search-type", lambda e: declares(e, "search-type"), _search),
    ("versioning", lambda e: e.get("versioning") == "versioned-update", _version_aware_update),
    ("updateCreate", lambda e: e.get("updateCreate") is True, _update_create),
    ("conditionalCreate", lambda e: e.get("conditionalCreate") is True, _conditional_create),
    ("conditionalUpdate", lambda e: e.get("conditionalUpdate") is True, _conditional_update),
    ("conditionalRead", lambda e: e.get("conditionalRead", "not-supported") != "not-supported", _conditional_read),
    ("conditionalDelete", lambda e: e.get("conditionalDelete", "not-supported") != "not-supported",
     _conditional_delete),
    ("delete", lambda e: declares(e, "delete"), _delete),
)


@pytest.fixture(scope="module")
def referenced(client: TestClient) -> None:
    """The patient and author the specific instances point to."""
    for resource in ({"resourceType": "Patient", "id": "capability-truth", "name": [{"family": "Vérité"}]},
                     {"resourceType": "Practitioner", "id": "capability-truth", "name": [{"family": "Preuve"}]}):
        response = client.put(f"/fhir/{resource['resourceType']}/capability-truth", json=resource)
        assert response.status_code in (200, 201), response.text


def claim_offenders(client: TestClient, entry: dict) -> list[str]:
    created = client.post(f"/fhir/{entry['type']}", json=instance_of(entry["type"]))
    if created.status_code != 201:
        return [f"{entry['type']} create: {failure(created)}"]
    stored = Stored(entry, created.json()["id"], created.json())
    problems = ((name, prove(client, stored)) for name, declared, prove in CLAIMS if declared(entry))
    return [f"{entry['type']} {name}: {problem}" for name, problem in problems if problem]


@pytest.mark.usefixtures("referenced")
def test_declared_write_interactions_and_policies_work_on_a_sample(client: TestClient, rest: dict) -> None:
    """Create, then every declared interaction and policy (versioning, conditional ones), then
    delete, on a fixed representative sample of types (all 146 would take a minute)."""
    declared = entries(rest)
    missing = [t for t in WRITE_SAMPLE if t not in declared]
    assert not missing, f"sampled types the statement does not list: {missing}"
    offenders = [offender for resource_type in WRITE_SAMPLE if declares(declared[resource_type], "create")
                 for offender in claim_offenders(client, declared[resource_type])]
    assert_truthful("write interactions", offenders)


def _try_update(client: TestClient, stored: Stored) -> Response:
    return client.put(stored.url, json=stored.resource)


def _try_patch(client: TestClient, stored: Stored) -> Response:
    operations = [{"op": "add", "path": "/language", "value": "fr"}]
    return client.patch(stored.url, content=json.dumps(operations),
                        headers={"Content-Type": "application/json-patch+json"})


def _try_conditional_update(client: TestClient, stored: Stored) -> Response:
    return client.put(f"/fhir/{stored.type}", params={"_id": stored.id}, json=stored.resource)


def _try_conditional_delete(client: TestClient, stored: Stored) -> Response:
    return client.delete(f"/fhir/{stored.type}", params={"_id": stored.id})


def _try_delete(client: TestClient, stored: Stored) -> Response:
    return client.delete(stored.url)


# Each change a statement may leave out for a type: (name, is it declared?, how it is tried).
CHANGES: tuple[tuple[str, Callable[[dict], bool], Callable[[TestClient, Stored], Response]], ...] = (
    ("update", lambda e: declares(e, "update"), _try_update),
    ("patch", lambda e: declares(e, "patch"), _try_patch),
    ("conditionalUpdate", lambda e: e.get("conditionalUpdate") is True, _try_conditional_update),
    ("conditionalDelete", lambda e: e.get("conditionalDelete", "not-supported") != "not-supported",
     _try_conditional_delete),
    ("delete", lambda e: declares(e, "delete"), _try_delete),
)


@pytest.mark.usefixtures("referenced")
def test_changes_the_statement_leaves_out_are_refused(client: TestClient, rest: dict) -> None:
    """The other side of the claims, on the same sample: a change the statement does not declare
    for a type (AuditEvent is append-only) is refused with 405, and the instance is left as it was."""
    offenders = []
    for entry in (entries(rest)[t] for t in WRITE_SAMPLE):
        undeclared = [(name, attempt) for name, declared, attempt in CHANGES if not declared(entry)]
        if not undeclared:
            continue
        created = client.post(f"/fhir/{entry['type']}", json=instance_of(entry["type"]))
        if created.status_code != 201:
            offenders.append(f"{entry['type']} create: {failure(created)}")
            continue
        stored = Stored(entry, created.json()["id"], created.json())
        for name, attempt in undeclared:
            problem = failure(attempt(client, stored), 405)
            offenders += [f"{entry['type']} {name} (undeclared): {problem}"] if problem else []
        after = client.get(stored.url)
        if failure(after, 200) or after.json().get("meta", {}).get("versionId") != "1":
            offenders.append(f"{entry['type']}: changed by undeclared interactions ({failure(after, 200)})")
    assert_truthful("undeclared changes", offenders)


def test_an_update_that_creates_goes_through_the_module_owning_creates(client: TestClient) -> None:
    """Found proving updateCreate: a PUT (or a conditional PUT matching nothing) creating an
    AuditEvent was stored by the engine itself, outside the audit hash chain, where a POST goes
    through the audit module; both now join the chain like a POST."""
    resource_id = new_id()
    put = client.put(f"/fhir/AuditEvent/{resource_id}",
                     json={**example("auditevent-creation-vaccination.json"), "id": resource_id})
    conditional = client.put("/fhir/AuditEvent", params={"_id": new_id()},
                             json=example("auditevent-lecture-document.json"))
    assert (put.status_code, conditional.status_code) == (201, 201), put.text + conditional.text
    assert client.get(f"/fhir/AuditEvent/{resource_id}").status_code == 200
    report = verify_chains(client.app.state.fhir.store)
    assert report.ok and report.unchained == 0, report.to_text()


# -- 2. search parameters, includes, modifiers -----------------------------------------------------------
SEARCH_VALUES = {"token": "x", "string": "a", "date": "ge2020-01-01", "reference": "Patient/x", "number": "1",
                 "quantity": "1", "uri": "http://x"}
# Result parameters the statement may declare at rest level: their values are fixed by the spec.
RESULT_PARAMETER_VALUES = {"_contained": "true", "_containedType": "contained", "_total": "accurate",
                           "_summary": "count", "_count": "1", "_sort": "_id", "_elements": "id"}
COMBINATION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-search-parameter-combination"

Query = list[tuple[str, str]]


def search_value(param: dict, search_parameters: dict[str, dict]) -> str | None:
    """A syntactically valid value of the parameter's type; None for `special` (no generic syntax)."""
    if param["type"] != "composite":
        return SEARCH_VALUES.get(param["type"])
    definition = search_parameters.get(param.get("definition", ""), {})
    kinds = [search_parameters.get(c.get("definition", ""), {}).get("type") for c in definition.get("component", [])]
    return "$".join(SEARCH_VALUES[k] for k in kinds) if kinds and all(k in SEARCH_VALUES for k in kinds) else None


@dataclass(frozen=True)
class Combination:
    """One declared search-parameter combination of a resource entry."""

    required: list[str]
    optional: list[str]


def combinations(entry: dict) -> list[Combination]:
    """The search-parameter combinations a resource entry declares, in order."""
    def names(extension: dict, kind: str) -> list[str]:
        return [e["valueString"] for e in extension.get("extension", []) if e.get("url") == kind]
    return [Combination(names(ext, "required"), names(ext, "optional"))
            for ext in entry.get("extension", []) if ext.get("url") == COMBINATION]


def required_companions(entry: dict) -> Query:
    """The required parameters of the type's first declared search-parameter combination: a type
    declaring combinations is only claimed searchable with one of them."""
    names = next((c.required for c in combinations(entry)), [])
    types = {p["name"]: p["type"] for p in entry.get("searchParam", [])}
    return [(name, SEARCH_VALUES.get(types.get(name, ""), "x")) for name in names]


CORE_SEARCH_PARAMETERS = "http://hl7.org/fhir/SearchParameter/"


@dataclass(frozen=True)
class Search:
    subject: str            # how an offender is named: `code`, `code:missing`, `_include=Type:param`
    query: Query
    alone: bool = False     # also tried on its own (see test_declared_search_parameters...)


def declared_searches(entry: dict, search_parameters: dict[str, dict]) -> Iterator[Search]:
    """Each declared parameter, modifier (from its SearchParameter), include and revinclude of a
    resource entry."""
    for param in entry.get("searchParam", []):
        value = search_value(param, search_parameters)
        if value is None:
            continue                    # special parameters have no syntax to try generically
        name, definition = param["name"], param.get("definition", "")
        yield Search(name, [(name, value)], name == "_lastUpdated" or not definition.startswith(CORE_SEARCH_PARAMETERS))
        for modifier in search_parameters.get(definition, {}).get("modifier", []):
            yield Search(f"{name}:{modifier}", [(f"{name}:{modifier}", "true" if modifier == "missing" else value)])
    for kind, name in (("searchInclude", "_include"), ("searchRevInclude", "_revinclude")):
        for include in entry.get(kind, []):
            yield Search(f"{name}={include}", [(name, include)])


def search_problem(client: TestClient, resource_type: str, query: Query) -> str | None:
    response = client.get(f"/fhir/{resource_type}", params=query, headers=STRICT)
    if response.status_code != 200:
        return failure(response)
    warnings = outcome_warnings(response.json())
    return f"warnings: {warnings}" if warnings else None


def search_offenders(client: TestClient, resource_type: str, searches: list[Search], companions: Query) -> list[str]:
    """All searches in one request (every parameter understood), then those to try alone; when the
    request of all fails, each alone, to name the offenders."""
    together = companions + [p for search in searches for p in search.query]
    alone = searches if search_problem(client, resource_type, together) else [s for s in searches if s.alone]
    problems = ((s.subject, search_problem(client, resource_type, companions + s.query)) for s in alone)
    return [f"{resource_type}?{subject}: {problem}" for subject, problem in problems if problem]


def canary_offenders(client: TestClient) -> list[str]:
    """Accepting the declared includes proves something only if strict handling refuses an
    include naming no search parameter."""
    queries = ((name, [(name, UNKNOWN_INCLUDE)]) for name in ("_include", "_revinclude"))
    return [f"Patient?{name}={UNKNOWN_INCLUDE} (canary): accepted in strict handling" for name, query in queries
            if search_problem(client, "Patient", query) is None]


def unbuildable_composites(rest: dict, search_parameters: dict[str, dict]) -> list[str]:
    return [f"{entry['type']}?{param['name']}: its components could not be resolved to build a value"
            for entry in rest["resource"] for param in entry.get("searchParam", [])
            if param["type"] == "composite" and search_value(param, search_parameters) is None]


def test_declared_search_parameters_includes_and_modifiers_are_understood(
        client: TestClient, rest: dict, search_parameters: dict[str, dict]) -> None:
    """Every declared searchParam with a valid value of its type, every declared modifier,
    searchInclude and searchRevInclude: 200 in strict handling, no warning. All of a type are
    sent in one request (one per parameter would take 20 s: each search is audited); a search
    rule refusing a lone parameter is caught by `_lastUpdated` alone (every type has it) and by
    each parameter defined outside the core package alone (where business modules add rules).
    `special` parameters have no generic syntax: they are not tried."""
    offenders = canary_offenders(client) + unbuildable_composites(rest, search_parameters)
    for resource_type, entry in entries(rest).items():
        searches = list(declared_searches(entry, search_parameters))
        offenders += search_offenders(client, resource_type, searches, required_companions(entry))
    assert_truthful("search", offenders)


def combination_offenders(client: TestClient, entry: dict, search_parameters: dict[str, dict]) -> list[str]:
    """Each combination names declared parameters and is accepted (strict) with its required
    parameters alone, and with all its parameters; a parameter required by none is refused alone
    (the combinations are the rule, not decoration)."""
    params = {p["name"]: p for p in entry.get("searchParam", [])}
    values = {name: search_value(param, search_parameters) for name, param in params.items()}
    resource_type, offenders = entry["type"], []
    for combination in combinations(entry):
        subject = f"{resource_type} combination {'+'.join(combination.required)}"
        undeclared = [n for n in combination.required + combination.optional if n not in params]
        if undeclared or not combination.required:
            offenders.append(f"{subject}: required {combination.required}, undeclared {undeclared}")
            continue
        for names in (combination.required, combination.required + combination.optional):
            problem = search_problem(client, resource_type, [(n, values[n]) for n in names if values[n] is not None])
            offenders += [f"{subject} ({len(names)} parameters): {problem}"] if problem else []
    required_somewhere = {n for c in combinations(entry) for n in c.required}
    alone = next((n for n in params if n not in required_somewhere and values[n] is not None), None)
    if alone is not None and search_problem(client, resource_type, [(alone, values[alone])]) is None:
        offenders.append(f"{resource_type}?{alone} alone: accepted, though it meets no declared combination")
    return offenders


def test_declared_search_combinations_are_the_rule(
        client: TestClient, rest: dict, search_parameters: dict[str, dict]) -> None:
    """Types whose searches a business rule restricts (AuditEvent: TDE; DocumentReference and MHD
    Lists: ITI-67 / ITI-66) declare it with capabilitystatement-search-parameter-combination."""
    declaring = [entry for entry in rest["resource"] if combinations(entry)]
    assert {"AuditEvent", "DocumentReference", "List"} <= {entry["type"] for entry in declaring}
    offenders = [o for entry in declaring for o in combination_offenders(client, entry, search_parameters)]
    assert_truthful("search combinations", offenders)


def test_declared_rest_level_search_parameters_apply_to_every_type(client: TestClient, rest: dict) -> None:
    """`rest.searchParam` applies to all searches: each type takes them, in strict handling."""
    names = [p["name"] for p in rest.get("searchParam", [])]
    unknown = [n for n in names if n not in RESULT_PARAMETER_VALUES]
    assert not unknown, f"rest-level parameters this test has no value for: {unknown}"
    searches = [Search(name, [(name, RESULT_PARAMETER_VALUES[name])]) for name in names]
    offenders = [o for resource_type, entry in entries(rest).items()
                 for o in search_offenders(client, resource_type, searches, required_companions(entry))]
    assert_truthful("rest-level search", offenders)


# -- 3. operations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeclaredOperation:
    resource_type: str | None          # None: system level (rest.operation)
    name: str
    definition: str

    @property
    def subject(self) -> str:
        return f"{self.resource_type or ''}/${self.name}".lstrip("/")


def declared_operations(rest: dict) -> list[DeclaredOperation]:
    system = [DeclaredOperation(None, op["name"], op["definition"]) for op in rest.get("operation", [])]
    return system + [DeclaredOperation(entry["type"], op["name"], op["definition"])
                     for entry in rest["resource"] for op in entry.get("operation", [])]


def served(client: TestClient, resource_type: str, url: str) -> dict | None:
    """The conformance resource the server serves for a canonical url, if exactly one."""
    response = client.get(f"/fhir/{resource_type}", params={"url": url.split("|", 1)[0]})
    found = [e["resource"] for e in response.json().get("entry", [])] if response.status_code == 200 else []
    return found[0] if len(found) == 1 else None


CORE_OPERATIONS = "http://hl7.org/fhir/OperationDefinition/"


@pytest.fixture(scope="module")
def operation_definitions(client: TestClient, rest: dict, definitions: Definitions) -> dict[str, dict]:
    """Each declared definition that resolves: a core one from the R4 package, any other only as
    the server serves it (`GET OperationDefinition?url=`: published, not merely loaded)."""
    urls = {op.definition for op in declared_operations(rest)}
    resolved = {url: definitions.operations.get(url) if url.startswith(CORE_OPERATIONS)
                else served(client, "OperationDefinition", url) for url in urls}
    return {url: definition for url, definition in resolved.items() if definition}


def definition_mismatch(operation: DeclaredOperation, definition: dict) -> str | None:
    """What the OperationDefinition says that contradicts where the statement declares it."""
    if definition.get("code") != operation.name:
        return f"{operation.definition} defines ${definition.get('code')}"
    if operation.resource_type is None:
        return None if definition.get("system") else f"{operation.definition} is not system level"
    if not {operation.resource_type, "Resource"} & set(definition.get("resource", [])):
        return f"{operation.definition} applies to {definition.get('resource')}"
    return None


def test_declared_operations_have_their_definition(rest: dict, operation_definitions: dict[str, dict]) -> None:
    """Each declared operation names an OperationDefinition that resolves (core package or served)
    and that defines that operation, for that type."""
    offenders = []
    for operation in declared_operations(rest):
        definition = operation_definitions.get(operation.definition)
        problem = definition_mismatch(operation, definition) if definition else f"{operation.definition} unresolved"
        offenders += [f"{operation.subject}: {problem}"] if problem else []
    assert_truthful("operation definitions", offenders)


def invocation_paths(operation: DeclaredOperation, definition: dict | None) -> dict[str, str]:
    """Level -> path, for the levels its definition allows (both of a resource entry without one)."""
    if operation.resource_type is None:
        return {"system": f"/fhir/${operation.name}"}
    paths = {"type": f"/fhir/{operation.resource_type}/${operation.name}",
             "instance": f"/fhir/{operation.resource_type}/{MISSING_ID}/${operation.name}"}
    return {level: path for level, path in paths.items() if definition is None or definition.get(level)}


def level_offenders(client: TestClient, operation: DeclaredOperation, definition: dict | None) -> list[str]:
    """Called with an empty Parameters, the operation is known at each level its definition
    allows; without a definition (reported on its own), at one level at least."""
    unknown = []
    for level, path in invocation_paths(operation, definition).items():
        response = client.post(path, json={"resourceType": "Parameters"})
        if is_unknown_operation(response) or response.status_code >= 500:
            unknown.append(f"{operation.subject} at {level} level: {failure(response)}")
    all_levels = 1 if operation.resource_type is None else 2
    return unknown if definition is not None or len(unknown) == all_levels else []


def test_declared_operations_are_known_at_their_levels(
        client: TestClient, rest: dict, operation_definitions: dict[str, dict]) -> None:
    """Each declared operation answers anything but "unknown operation" (a 400 for missing
    parameters, a 404 for the missing instance it is called on are fine)."""
    offenders = [offender for operation in declared_operations(rest)
                 for offender in level_offenders(client, operation, operation_definitions.get(operation.definition))]
    assert_truthful("operation levels", offenders)


def known_at(client: TestClient, path: str) -> bool:
    response = client.post(path, json={"resourceType": "Parameters"})
    return not (is_unknown_operation(response) or response.status_code >= 500)


def served_levels(client: TestClient, operation: DeclaredOperation) -> set[str]:
    """The levels at which the server knows the operation (called with an empty Parameters)."""
    paths = {"system": f"/fhir/${operation.name}"}
    if operation.resource_type is not None:
        paths |= {"type": f"/fhir/{operation.resource_type}/${operation.name}",
                  "instance": f"/fhir/{operation.resource_type}/{MISSING_ID}/${operation.name}"}
    return {level for level, path in paths.items() if known_at(client, path)}


def get_refused_as_changing(client: TestClient, operation: DeclaredOperation, definition: dict) -> bool:
    """GET at the first level the definition allows is refused as changing data (405)."""
    level = next(level for level in ("instance", "type", "system") if definition.get(level))
    path = {"system": f"/fhir/${operation.name}",
            "type": f"/fhir/{operation.resource_type}/${operation.name}",
            "instance": f"/fhir/{operation.resource_type}/{MISSING_ID}/${operation.name}"}[level]
    return client.get(path).status_code == 405


def test_our_operation_definitions_say_where_and_how_they_are_served(
        client: TestClient, rest: dict, operation_definitions: dict[str, dict]) -> None:
    """Each OperationDefinition of ours that the statement names (ours restrict core ones, e.g.
    $everything to instance level): its levels are exactly those served, and affectsState says
    whether GET is refused (405: the operation changes data)."""
    offenders = []
    for operation in declared_operations(rest):
        definition = operation_definitions.get(operation.definition)
        if definition is None or operation.definition.startswith(CORE_OPERATIONS):
            continue
        defined = {level for level in ("system", "type", "instance") if definition.get(level)}
        served_at = served_levels(client, operation)
        if served_at != defined:
            offenders.append(f"{operation.subject}: served at {sorted(served_at)}, defined at {sorted(defined)}")
        if get_refused_as_changing(client, operation, definition) != bool(definition.get("affectsState")):
            offenders.append(f"{operation.subject}: affectsState {definition.get('affectsState')} but GET is "
                             f"{'' if definition.get('affectsState') else 'not '}accepted")
    assert_truthful("our operation definitions", offenders)


# -- 4. formats ---------------------------------------------------------------------------------------
def media_kind(content_type: str) -> str:
    return "xml" if "xml" in content_type else "json"


def test_declared_formats_are_served_and_accepted(client: TestClient, statement: dict) -> None:
    """Each declared format: a read in it (`_format`, and Accept for a media type) answers in it,
    and what it answered is accepted back as an update (Content-Type)."""
    created = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Format"}]})
    url = f"/fhir/Patient/{created.json()['id']}"
    offenders = []
    for fmt in statement.get("format", []):
        asked = {"_format": client.get(url, params={"_format": fmt})}
        if "/" in fmt:
            asked["Accept"] = client.get(url, headers={"Accept": fmt})
        for how, response in asked.items():
            answered = response.headers.get("Content-Type", "")
            if response.status_code != 200 or media_kind(answered) != media_kind(fmt):
                offenders.append(f"{fmt} ({how}): {failure(response)} {answered}")
        if "/" in fmt:
            back = client.put(url, content=asked["Accept"].content, headers={"Content-Type": fmt})
            offenders += [f"{fmt} (Content-Type): {failure(back)}"] if back.status_code != 200 else []
    assert_truthful("formats", offenders)


FHIRPATH_REPLACE = ('<Parameters xmlns="http://hl7.org/fhir"><parameter><name value="operation"/>'
                    '<part><name value="type"/><valueCode value="replace"/></part>'
                    '<part><name value="path"/><valueString value="Patient.gender"/></part>'
                    '<part><name value="value"/><valueCode value="{gender}"/></part></parameter></Parameters>')
# A patch setting Patient.gender, in each patch format this test knows.
PATCH_BODIES: dict[str, Callable[[str], str]] = {
    "application/json-patch+json": lambda gender: json.dumps([{"op": "replace", "path": "/gender", "value": gender}]),
    "application/xml-patch+xml": lambda gender: f'<diff xmlns:f="http://hl7.org/fhir"><replace '
                                                f'sel="f:Patient/f:gender/@value">{gender}</replace></diff>',
    "application/fhir+json": lambda gender: json.dumps({"resourceType": "Parameters", "parameter": [{
        "name": "operation", "part": [{"name": "type", "valueCode": "replace"},
                                      {"name": "path", "valueString": "Patient.gender"},
                                      {"name": "value", "valueCode": gender}]}]}),
    "application/fhir+xml": lambda gender: FHIRPATH_REPLACE.format(gender=gender),
}
GENDERS = ("male", "female", "other", "unknown")


def test_declared_patch_formats_are_applied(client: TestClient, statement: dict) -> None:
    """Each declared patchFormat patches a resource (the change shows when it is read again)."""
    created = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "unknown"})
    url = f"/fhir/Patient/{created.json()['id']}"
    offenders = []
    for number, fmt in enumerate(statement.get("patchFormat", [])):
        if fmt not in PATCH_BODIES:
            offenders.append(f"{fmt}: no patch body known to this test for it")
            continue
        gender = GENDERS[number % len(GENDERS)]
        response = client.patch(url, content=PATCH_BODIES[fmt](gender).encode(), headers={"Content-Type": fmt})
        now = client.get(url).json().get("gender")
        if response.status_code != 200 or now != gender:
            offenders.append(f"{fmt}: {failure(response)} gender={now}")
    assert_truthful("patch formats", offenders)


# -- 5. security, system interactions, canonicals ---------------------------------------------------------
SMART_SERVICE = "SMART-on-FHIR"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def declares_smart(rest: dict) -> bool:
    security = rest.get("security", {})
    codes = {c.get("code") for s in security.get("service", []) for c in s.get("coding", [])}
    return SMART_SERVICE in codes or any(e.get("url") == OAUTH_URIS for e in security.get("extension", []))


def test_smart_is_declared_exactly_when_its_configuration_is_served(client: TestClient, rest: dict) -> None:
    """SMART App Launch: `rest.security` names SMART-on-FHIR iff `.well-known/smart-configuration`
    is served (with its endpoints); the probe every SMART client sends first must not crash."""
    answering = TestClient(client.app, base_url=str(client.base_url), headers=client.headers,
                           raise_server_exceptions=False)     # a crash is an answer here
    response = answering.get("/fhir/.well-known/smart-configuration", headers={"Accept": "application/json"})
    configuration = response.json() if response.status_code == 200 else {}
    is_served = "token_endpoint" in configuration and "capabilities" in configuration
    offenders = [f"smart-configuration probe: {response.status_code} {response.text[:100]}"] \
        if response.status_code >= 500 else []
    if declares_smart(rest) != is_served:
        offenders.append(f"SMART: declared in rest.security {declares_smart(rest)}, configuration served {is_served}")
    assert_truthful("security", offenders)


def _transaction(client: TestClient) -> str | None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Basic"}, "resource": instance_of("Basic")}]}
    response = client.post("/fhir", json=bundle)
    statuses = [e["response"]["status"] for e in response.json().get("entry", [])] if response.is_success else []
    return failure(response, 200) or (None if statuses[:1] == ["201 Created"] else f"entries {statuses}")


def _batch(client: TestClient) -> str | None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Basic"}}]}
    response = client.post("/fhir", json=bundle)
    statuses = [e["response"]["status"] for e in response.json().get("entry", [])] if response.is_success else []
    return failure(response, 200) or (None if [s[:3] for s in statuses] == ["200"] else f"entries {statuses}")


def _bundle_of(path: str, params: dict[str, str], kind: str) -> Callable[[TestClient], str | None]:
    def prove(client: TestClient) -> str | None:
        response = client.get(path, params=params)
        found = response.json().get("type") if response.status_code == 200 else None
        return failure(response, 200) or (None if found == kind else f"a {found} Bundle")
    return prove


SYSTEM_INTERACTIONS: dict[str, Callable[[TestClient], str | None]] = {
    "transaction": _transaction,
    "batch": _batch,
    "search-system": _bundle_of("/fhir", {"_type": "Basic", "_count": "1"}, "searchset"),
    "history-system": _bundle_of("/fhir/_history", {"_count": "1"}, "history"),
}


def test_declared_system_interactions_work(client: TestClient, rest: dict) -> None:
    offenders = []
    for interaction in (i["code"] for i in rest.get("interaction", [])):
        prove = SYSTEM_INTERACTIONS.get(interaction)
        problem = prove(client) if prove else "no proof known to this test"
        offenders += [f"{interaction}: {problem}"] if problem else []
    assert_truthful("system interactions", offenders)


def declared_canonicals(rest: dict) -> set[tuple[str, str]]:
    """(conformance type, url) of the profiles and search parameter definitions declared."""
    canonicals = set()
    for entry in rest["resource"]:
        profiles = [entry.get("profile"), *entry.get("supportedProfile", [])]
        canonicals |= {("StructureDefinition", url) for url in profiles if url}
        canonicals |= {("SearchParameter", p["definition"]) for p in entry.get("searchParam", []) if "definition" in p}
    return canonicals


def test_declared_profiles_and_search_parameters_resolve(
        client: TestClient, rest: dict, definitions: Definitions, search_parameters: dict[str, dict]) -> None:
    """Each profile, supportedProfile and searchParam.definition is in the R4 core package or
    served by the server (`GET [type]?url=`)."""
    core = {url for url, sd in definitions.structures.items() if url.startswith("http://hl7.org/fhir/")} | \
        {url for url in search_parameters if url.startswith(CORE_SEARCH_PARAMETERS)}
    offenders = [f"{kind} {url}: not served" for kind, url in sorted(declared_canonicals(rest))
                 if url not in core and served(client, kind, url) is None]
    assert_truthful("canonicals", offenders)
