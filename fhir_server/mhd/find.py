"""ITI-67 Find Document References and ITI-66 Find Document Lists: the consumer names the patient
(`patient` or `patient.identifier`) and the status. A search without them is refused with an
explanation rather than answered: it would run over every document of the server the requester
may see, which no consumer of a health space means to do.

Every PDSm search parameter is an ordinary SearchParameter (core R4 ones, and the PDSm / MHD ones
under `profiles/search-parameters/`). The rule is a `server.search_rules` entry, so it applies to GET
and POST `_search`, in JSON and XML; a compartment search (`Patient/[id]/DocumentReference`) names
the patient by its path and is left alone.

Two rewrites (`server.search_rewrites`) make the answers what MHD consumers expect:
- `author.given` / `author.family` look like chains, but a PDSm author is contained (`#id`), which
  no chain reaches: they stand for our `author-given` / `author-family` parameters, whose
  expressions read the contained author's name (see profiles/search-parameters/);
- a find response carries `total` (MHD find-response profiles: 1..1), so `_total` defaults to
  `accurate` on ITI-67 / ITI-66 searches (the count is bounded by one patient's entries).
"""

from __future__ import annotations

from fhir_server.engine.errors import error
from fhir_server.engine.model import RequestContext
from fhir_server.mhd import canonical

# List parameters that only make sense on MHD lists (a search using one is an ITI-66 search).
MHD_LIST_PARAMETERS = frozenset({"designationType", "sourceId", "isArchived", "authorOrg"})
MHD_LIST_CODES = (canonical.SUBMISSIONSET_CODE, canonical.FOLDER_CODE)
AUTHOR_NAME_PARAMETERS = {"author.given": "author-given", "author.family": "author-family"}


def require_patient_and_status(ctx: RequestContext, resource_type: str, params: list[tuple[str, str]]) -> None:
    """Search rule (server.search_rules)."""
    given = {_parameter(name) for name, value in params if value.strip()}
    if resource_type == "DocumentReference":
        transaction = "ITI-67 Find Document References"
    elif resource_type == "List" and _is_mhd_list_search(params):
        transaction = "ITI-66 Find Document Lists"
    else:
        return
    if "_id" in given:          # fetching entries already known by id is a read, not a find
        return
    missing = [name for name in ("patient", "status") if name not in given]
    if missing:
        raise error(400, "required", f"{transaction} needs the patient (patient=Patient/[id] or "
                    "patient.identifier=urn:oid:1.2.250.1.213.1.4.8|[INS]) and the status (status=current for the "
                    f"entries in force); missing: {', '.join(missing)}", *missing)


def rewrite_find(resource_type: str, params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Search rewrite (server.search_rewrites)."""
    if resource_type == "DocumentReference":
        params = [(_author_name_parameter(name), value) for name, value in params]
    elif not (resource_type == "List" and _is_mhd_list_search(params)):
        return params
    if any(name.split(":", 1)[0] == "_total" for name, _ in params):
        return params
    return [*params, ("_total", "accurate")]


def _author_name_parameter(name: str) -> str:
    """`author.given:exact` -> `author-given:exact`; other names unchanged."""
    base, colon, modifier = name.partition(":")
    return AUTHOR_NAME_PARAMETERS.get(base, base) + colon + modifier


def _parameter(name: str) -> str:
    """`patient.identifier` -> patient, `status:not` -> status."""
    return name.split(":", 1)[0].split(".", 1)[0]


def _is_mhd_list_search(params: list[tuple[str, str]]) -> bool:
    for name, value in params:
        parameter = _parameter(name)
        if parameter in MHD_LIST_PARAMETERS:
            return True
        if parameter == "code" and any(code in value for code in MHD_LIST_CODES):
            return True
    return False
