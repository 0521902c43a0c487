"""Validation as the server applies it: the structure (JSON schema) and profile validators combined,
the profiles a write must meet, and the operations built on them (`$validate`, `$snapshot`).

The same `ResourceValidation` serves three callers, so that they always agree:
- the write rule (`module.py`) refuses a create / update / patch that fails the profiles it claims
  or the profile required for its type;
- `$validate` reports everything, in any mode, without storing anything;
- `fhir-server validate` (`cli.py`) runs offline on files.

Profile requirements are data: `Type=url` pairs (env `FHIR_REQUIRED_PROFILES`), optionally with a
FHIRPath condition for the defaults (a Composition needs the VSM profile only when it *is* a VSM).
A required profile the definitions do not know is skipped: the requirement starts to apply when
its StructureDefinition is added (the PDSm profiles come from another package of the project).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from fhir_server.engine.errors import FhirError, Issue, bad_request, operation_outcome
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext, Result
from fhir_server.engine.operations import Operation, OperationCall
from fhir_server.search.filters import and_filters, or_filters
from fhir_server.terminology import strip_version
from fhir_server.validation.profile import ProfileValidator
from fhir_server.validation.snapshot import SnapshotError, generate_snapshot
from fhir_server.validation.structure import StructureValidator

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

REQUIRED_PROFILES_ENV = "FHIR_REQUIRED_PROFILES"
PDSM_DOCUMENT_REFERENCE = ("https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"
                           "pdsm-comprehensive-document-reference")
VSM_COMPOSITION = "https://espace.example.org/fhir/StructureDefinition/espace-vsm-composition"
ESPACE_AUDIT_EVENT = "https://espace.example.org/fhir/StructureDefinition/espace-auditevent"
MODES = ("create", "update", "delete", "profile")
MAX_REFERRERS_SHOWN = 10
NOT_REFERRERS = frozenset({"AuditEvent"})
ERRORS = ("error", "fatal")


@dataclass(frozen=True)
class ProfileRequirement:
    """Resources of `resource_type` (those matching the FHIRPath `when`, if given) must conform to
    `profile` to be stored."""

    resource_type: str
    profile: str
    when: str | None = None


DEFAULT_REQUIREMENTS = (
    ProfileRequirement("DocumentReference", PDSM_DOCUMENT_REFERENCE),
    ProfileRequirement("Composition", VSM_COMPOSITION,
                       when="type.coding.where(system = 'http://loinc.org' and code = '60591-5').exists()"),
    ProfileRequirement("AuditEvent", ESPACE_AUDIT_EVENT),
)


def parse_requirements(text: str) -> tuple[ProfileRequirement, ...]:
    """`Type=url,Type2=url2` -> requirements; empty or `none` -> no requirement at all."""
    if text.strip().lower() in ("", "none"):
        return ()
    requirements = []
    for item in text.split(","):
        resource_type, separator, url = item.strip().partition("=")
        if not separator or not resource_type.strip() or not url.strip():
            raise ValueError(f"{REQUIRED_PROFILES_ENV}: '{item.strip()}' is not of the form Type=profile-url")
        requirements.append(ProfileRequirement(resource_type.strip(), url.strip()))
    return tuple(requirements)


def requirements_from_env(environ: dict[str, str] | None = None) -> tuple[ProfileRequirement, ...]:
    """The configured requirements (`FHIR_REQUIRED_PROFILES`), or the defaults when it is unset."""
    environ = os.environ if environ is None else environ
    text = environ.get(REQUIRED_PROFILES_ENV)
    return DEFAULT_REQUIREMENTS if text is None else parse_requirements(text)


@dataclass
class ResourceValidation:
    """Structure + profile validation, and which profiles a stored resource must meet."""

    structure: StructureValidator
    profiles: ProfileValidator
    requirements: tuple[ProfileRequirement, ...] = DEFAULT_REQUIREMENTS
    _conditions: dict[str, Callable[[Any], list]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for requirement in self.requirements:
            if not self.profiles.definitions.is_resource_type(requirement.resource_type):
                raise ValueError(f"{REQUIRED_PROFILES_ENV}: {requirement.resource_type} is not a FHIR R4 resource type")
            if requirement.when and requirement.when not in self._conditions:
                self._conditions[requirement.when] = compile_fhirpath(requirement.when, models["r4"])

    def is_known(self, url: str) -> bool:
        return strip_version(url) in self.profiles.definitions.structures

    def write_profiles(self, resource: dict) -> list[str]:
        """The profiles a create / update must meet: those it claims that the server knows, and those
        required for its type (once the server knows them)."""
        meta = resource.get("meta")
        claimed = meta.get("profile") if isinstance(meta, dict) else None
        urls = [u for u in claimed if isinstance(u, str) and self.is_known(u)] if isinstance(claimed, list) else []
        for requirement in self.requirements:
            if requirement.resource_type == resource.get("resourceType") and self.is_known(requirement.profile) \
                    and self._applies(requirement, resource) and requirement.profile not in urls:
                urls.append(requirement.profile)
        return urls

    def _applies(self, requirement: ProfileRequirement, resource: dict) -> bool:
        if requirement.when is None:
            return True
        try:
            return self._conditions[requirement.when](resource) == [True]
        except Exception:  # noqa: BLE001 - a condition that cannot be evaluated on broken input does not apply
            return False

    def profile_issues(self, resource: dict, profiles: list[str] | None = None) -> list[Issue]:
        """Issues against `profiles`, or against the resource's claimed profiles when None."""
        return self.profiles.validate(resource, profiles)

    def validate(self, resource: object, resource_type: str | None = None, profiles: list[str] | None = None,
                 for_write: bool = False) -> list[Issue]:
        """Structure and profile issues together. `profiles` replaces the claimed ones; `for_write`
        adds what a write would be held to (the required profiles)."""
        issues = self.structure.validate(resource, resource_type)
        if not isinstance(resource, dict) or any(i.code == "structure" and i.expression == ("resourceType",)
                                                 for i in issues):
            return issues                 # not a resource of a known type: nothing more to say
        if profiles is None and for_write:
            profiles = self.write_profiles(resource)
        return combine(issues, self.profiles.validate(resource, profiles or None))


def combine(structure_issues: Iterable[Issue], profile_issues: Iterable[Issue]) -> list[Issue]:
    """Both lists, without the profile issues that repeat a structure issue (same severity, code
    and location: the JSON schema and the base profile both see a missing required element)."""
    issues = list(structure_issues)
    seen = {(i.severity, i.code, i.expression) for i in issues}
    for issue in profile_issues:
        if (issue.severity, issue.code, issue.expression) not in seen and issue not in issues:
            issues.append(issue)
    return issues


def errors_in(issues: Iterable[Issue]) -> list[Issue]:
    return [i for i in issues if i.severity in ERRORS]


# -- enforcement on write ---------------------------------------------------------------------------
class ProfileEnforcement:
    """Write rule: a create, update or patch whose resource fails the profiles it must meet is
    refused with 422 and its issues (errors and warnings); nothing is stored."""

    def __init__(self, validation: ResourceValidation) -> None:
        self.validation = validation

    def __call__(self, event: WriteEvent) -> None:
        if event.new is None or event.interaction == "delete":
            return
        profiles = self.validation.write_profiles(event.new)
        if not profiles:
            return
        issues = self.validation.profile_issues(event.new, profiles)
        if errors_in(issues):
            raise FhirError(422, [i for i in issues if i.severity != "information"])


# -- $validate ----------------------------------------------------------------------------------------
@dataclass
class ValidateRequest:
    resource: dict | None
    profiles: list[str]
    mode: str | None


class ValidateOperation:
    """`[base]/Type/$validate` and `[base]/Type/id/$validate` (GET or POST): structure and profile
    validation of a resource in the body (a resource, or Parameters with `resource`, `profile`,
    `mode`), or of the stored one at instance level. Modes: `create` / `update` preview a write
    (required profiles and the other write rules included), `delete` whether the resource may be
    deleted, `profile` / none plain validation. Always 200 with the OperationOutcome; 400 only for an
    invocation that cannot be understood."""

    DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"

    def __init__(self, server: FhirServer, validation: ResourceValidation,
                 own_rules: tuple[Callable[[WriteEvent], None], ...] = (),
                 reading_as: Callable[[RequestContext], AbstractContextManager[None]] | None = None) -> None:
        self.server = server
        self.validation = validation
        self._own_rules = own_rules            # ours are reported through `validate`, not re-run
        # references are resolved as the caller may read them (nothing hidden leaks into issues)
        self._reading_as = reading_as or (lambda ctx: nullcontext())

    def operation(self) -> Operation:
        return Operation(name="validate", handler=self, instance=True, definition=self.DEFINITION,
                         documentation="Structure, profile (StructureDefinition, invariants, terminology) and "
                                       "write-rule validation; modes create, update, delete, profile")

    def __call__(self, call: OperationCall) -> Result:
        with self._reading_as(call.ctx):
            return self._validate(call)

    def _validate(self, call: OperationCall) -> Result:
        request = _validate_request(call)
        if request.mode == "delete":
            return Result(200, operation_outcome(self._delete_issues(call)))
        resource = request.resource
        if resource is None and call.resource_id:
            resource = self.server.interactions.read(call.resource_type, call.resource_id, call.ctx).body
        if resource is None:
            raise bad_request("$validate needs a resource: in the body, in a Parameters 'resource' part, or "
                              "the stored one at instance level ([base]/Type/id/$validate)")
        writing = request.mode in ("create", "update")
        issues = self._mode_issues(call, resource, request.mode)
        issues += self.validation.validate(resource, call.resource_type, request.profiles or None, for_write=writing)
        if writing and not errors_in(issues):
            issues += self._dry_run(call, request.mode, resource)
        return Result(200, operation_outcome(issues))

    def _mode_issues(self, call: OperationCall, resource: object, mode: str | None) -> list[Issue]:
        if mode != "update" or not isinstance(resource, dict):
            return []
        body_id = resource.get("id")
        if body_id is None:
            return [Issue("error", "required", "An update needs the resource id", (f"{call.resource_type}.id",))]
        if call.resource_id and body_id != call.resource_id:
            return [Issue("error", "invalid", f"The resource id '{body_id}' does not match the id "
                          f"'{call.resource_id}' in the URL", (f"{call.resource_type}.id",))]
        return []

    def _delete_issues(self, call: OperationCall) -> list[Issue]:
        """Would `DELETE [base]/Type/id` succeed? The caller's right to delete, the business rules
        (immutable audit trail, ...), and the resources still referring to it (HAPI's referential
        check; deletes are not refused here, so those are warnings). No body needed."""
        if not call.resource_id:
            raise bad_request("$validate with mode=delete is invoked on the instance: [base]/Type/id/$validate")
        current = self.server.interactions.read(call.resource_type, call.resource_id, call.ctx).body
        issues: list[Issue] = []
        access = call.ctx.access
        if access is not None:
            try:
                self.server.policy.check_interaction(access, call.resource_type, "delete")
            except FhirError as exc:
                issues += exc.issues
        return issues + self._dry_run(call, "delete", current) + self._referrer_issues(call)

    def _referrer_issues(self, call: OperationCall) -> list[Issue]:
        target = f"{call.resource_type}/{call.resource_id}"
        referrers = referring_resources(self.server, call.ctx, call.resource_type, call.resource_id)
        if not referrers:
            return []
        shown = ", ".join(referrers[:MAX_REFERRERS_SHOWN]) + (", ..." if len(referrers) > MAX_REFERRERS_SHOWN else "")
        count = f"{len(referrers)}+" if len(referrers) > MAX_REFERRERS_SHOWN else str(len(referrers))
        return [Issue("warning", "business-rule", f"{target} is still referred to by {count} resource(s) "
                      f"({shown}): the delete is allowed but leaves these references dangling")]

    def _dry_run(self, call: OperationCall, mode: str, resource: dict) -> list[Issue]:
        """The other write rules (business modules), run on an event that is never stored. Rules
        run before anything is stored, so they are side-effect free by contract."""
        old = resource if mode == "delete" else None
        new = None if mode == "delete" else resource
        event = WriteEvent(call.ctx, mode, call.resource_type or resource.get("resourceType", ""),
                           call.resource_id or str(resource.get("id", "")), old, new, None, 0)
        issues: list[Issue] = []
        for rule in self.server.interactions.write_rules:
            if rule in self._own_rules:
                continue
            try:
                rule(event)
            except FhirError as exc:
                issues += exc.issues
            except Exception as exc:  # noqa: BLE001 - a rule that cannot judge a dry run is reported, not fatal
                issues.append(Issue("warning", "processing", f"A business rule could not be checked without "
                                    f"storing the resource: {exc}"))
        return issues


def referring_resources(server: FhirServer, ctx: RequestContext, resource_type: str, resource_id: str) -> list[str]:
    """`Type/id` of the resources the caller may read that refer to this one through a reference
    search parameter (at most MAX_REFERRERS_SHOWN + 1). The audit trail is left out: it refers to
    deleted resources by design."""
    target = f"{resource_type}/{resource_id}"
    registry = server.search_registry
    found: list[str] = []
    for source in registry.resource_types:
        if source in NOT_REFERRERS or not _may_read(server, ctx, source):
            continue
        fields = sorted({p.field for p in registry.params_for(source).values()
                         if p.type == "reference" and resource_type in p.targets})
        if not fields:
            continue
        query = and_filters(or_filters([{f: target} for f in fields]),
                            server.interactions.read_filter(ctx, source))
        limit = MAX_REFERRERS_SHOWN + 1 - len(found)
        found += [f"{source}/{d['_id']}" for d in server.store.find(source, query, limit=limit, projection={"_id": 1})
                  if f"{source}/{d['_id']}" != target]
        if len(found) > MAX_REFERRERS_SHOWN:
            break
    return found


def _may_read(server: FhirServer, ctx: RequestContext, resource_type: str) -> bool:
    """Scopes and roles allow the caller to read this type at all (so nothing else is revealed)."""
    if ctx.access is None:
        return True
    try:
        server.policy.check_interaction(ctx.access, resource_type, "read")
    except FhirError:
        return False
    return True


def _validate_request(call: OperationCall) -> ValidateRequest:
    body = call.body
    resource: dict | None = None
    profiles = [v for k, v in call.params if k == "profile" and v]
    mode = next((v for k, v in call.params if k == "mode" and v), None)
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for parameter in body.get("parameter") or []:
            if not isinstance(parameter, dict):
                continue
            name = parameter.get("name")
            if name == "resource":
                resource = parameter.get("resource")
            elif name == "profile":
                value = _primitive_value(parameter)
                if value:
                    profiles.append(value)
            elif name == "mode":
                mode = _primitive_value(parameter) or mode
    elif isinstance(body, dict):
        resource = body
    elif body is not None:
        raise bad_request("The body of $validate must be a resource or a Parameters resource")
    if mode is not None and mode not in MODES:
        raise bad_request(f"mode '{mode}' is not one of {', '.join(MODES)}", "mode")
    return ValidateRequest(resource if isinstance(resource, dict) else None, profiles, mode)


def _primitive_value(parameter: dict) -> str | None:
    for key, value in parameter.items():
        if key.startswith("value") and isinstance(value, str):
            return value
    return None


# -- $snapshot ----------------------------------------------------------------------------------------
class SnapshotOperation:
    """`StructureDefinition/$snapshot?url=...` (or a posted `definition`), and
    `StructureDefinition/[id]/$snapshot`: the StructureDefinition with its snapshot, as the server
    generates it from the differential (the served resources are stored as authored)."""

    DEFINITION = "http://hl7.org/fhir/OperationDefinition/StructureDefinition-snapshot"

    def __init__(self, server: FhirServer) -> None:
        self.server = server

    def operation(self) -> Operation:
        return Operation(name="snapshot", handler=self, resource_types=("StructureDefinition",), instance=True,
                         definition=self.DEFINITION,
                         documentation="The snapshot of a profile, generated from its differential")

    def __call__(self, call: OperationCall) -> Result:
        definitions = self.server.definitions
        if call.resource_id:
            sd = self.server.interactions.read("StructureDefinition", call.resource_id, call.ctx).body or {}
        else:
            sd = _snapshot_input(call)
        known = definitions.structures.get(strip_version(str(sd.get("url", ""))))
        if known is not None and known.get("snapshot") and _same_definition(known, sd):
            return Result(200, known)
        try:
            return Result(200, generate_snapshot(sd, definitions))
        except SnapshotError as exc:
            raise FhirError(422, [Issue("error", "processing", m) for m in exc.messages]) from exc


def _snapshot_input(call: OperationCall) -> dict:
    body = call.body
    url = next((v for k, v in call.params if k == "url" and v), None)
    if isinstance(body, dict) and body.get("resourceType") == "StructureDefinition":
        return body
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for parameter in body.get("parameter") or []:
            if parameter.get("name") == "definition" and isinstance(parameter.get("resource"), dict):
                return parameter["resource"]
            if parameter.get("name") == "url":
                url = _primitive_value(parameter) or url
    if url is None:
        raise bad_request("$snapshot needs a StructureDefinition: url=..., a 'definition' parameter, or "
                          "StructureDefinition/[id]/$snapshot")
    return {"resourceType": "StructureDefinition", "url": url}


def _same_definition(known: dict, given: dict) -> bool:
    """`given` names `known` (url only), or is the same definition as authored."""
    if set(given) <= {"resourceType", "url"}:
        return True
    return {k: v for k, v in known.items() if k not in ("snapshot", "meta")} == \
        {k: v for k, v in given.items() if k not in ("snapshot", "meta")}
