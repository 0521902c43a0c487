"""Business module: profiles enforced on write, `$validate`, the terminology operations, and the
conformance resources served by the server.

`install(server)` builds the profile validator and the terminology service over
`server.definitions` (references are resolved from the store, without access filtering when a
write is checked: a profile's reference rules are about the data, not about who asks; but as the
caller may read when `$validate` reports on them, so that it cannot reveal what the caller may
not see), and registers:
- `$validate` (replacing the core structural one), type and instance level;
- a write rule: creates, updates and patches must meet the profiles they claim and the profiles
  required for their type (`FHIR_REQUIRED_PROFILES`), else 422 and nothing is stored;
- `StructureDefinition/$snapshot`, `ValueSet/$expand`, `$validate-code`, `CodeSystem/$lookup`;
- start-up hooks that compile the plans of our profiles and publish the conformance resources,
  the server's CapabilityStatement included (named by `CAPABILITY_URL` and the software version, so
  that `GET [base]/CapabilityStatement?url=...&version=...` finds it like any conformance resource).

The validator and the terminology service are also left on the server (`server.profile_validator`,
`server.terminology`, `server.resource_validation`) for the other business modules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING

from fhir_server.definitions import Definitions
from fhir_server.engine.errors import FhirError
from fhir_server.engine.model import ID_PATTERN, RequestContext
from fhir_server.ig.publish import ConformancePublisher, publishing_enabled
from fhir_server.storage import MongoStore
from fhir_server.terminology import Terminology
from fhir_server.terminology.operations import TerminologyOperations
from fhir_server.validation.operation import (
    ProfileEnforcement,
    ResourceValidation,
    SnapshotOperation,
    ValidateOperation,
    requirements_from_env,
)
from fhir_server.validation.profile import ProfileValidator, Resolver

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

CAPABILITY_ID = "espace"
CAPABILITY_URL = "https://espace.example.org/fhir/CapabilityStatement/espace"

CallerRead = Callable[[str, str], dict | None]      # (type, id) -> the stored document the caller may read

# While `$validate` runs for a caller, references resolve only to what that caller may read.
_CALLER_READ: ContextVar[CallerRead | None] = ContextVar("validation_caller_read", default=None)


def install(server: FhirServer) -> None:
    definitions = server.definitions
    terminology = Terminology(definitions)
    profiles = ProfileValidator(definitions, terminology, store_resolver(server.store, definitions,
                                                                         server.settings.base_url))
    validation = ResourceValidation(server.validator, profiles, requirements_from_env())
    server.terminology = terminology
    server.profile_validator = profiles
    server.resource_validation = validation

    enforcement = ProfileEnforcement(validation)
    server.interactions.write_rules.append(enforcement)
    server.operations.register(ValidateOperation(server, validation, own_rules=(enforcement,),
                                                 reading_as=_reading_as(server)).operation())
    server.operations.register(SnapshotOperation(server).operation())

    def read(resource_type: str, resource_id: str, ctx: RequestContext) -> dict:
        return server.interactions.read(resource_type, resource_id, ctx).body or {}

    TerminologyOperations(definitions, terminology, read).register(server.operations)
    server.capability_amendments.append(identify_capability_statement)
    server.startup_hooks.append(lambda: _compile_our_profiles(profiles, definitions))
    server.startup_hooks.append(ConformancePublisher(server))
    server.startup_hooks.append(lambda: publish_capability_statement(server))


def store_resolver(store: MongoStore, definitions: Definitions, base_url: str | None = None) -> Resolver:
    """Resolve `Type/id` references (relative, or absolute on this server's base) from the store.
    References to other servers, conditional references and fragments are not looked up."""
    own_base = (base_url or "").rstrip("/") + "/" if base_url else None

    def resolve(reference: str) -> dict | None:
        if own_base and reference.startswith(own_base):
            reference = reference[len(own_base):]
        if "://" in reference or reference.startswith(("#", "urn:")) or "?" in reference:
            return None
        parts = reference.split("/_history/")[0].strip("/").split("/")
        if len(parts) != 2 or not definitions.is_resource_type(parts[0]) or not ID_PATTERN.match(parts[1]):
            return None
        caller_read = _CALLER_READ.get()
        document = caller_read(parts[0], parts[1]) if caller_read else store.get(parts[0], parts[1])
        return document["resource"] if document else None

    return resolve


def _reading_as(server: FhirServer) -> Callable[[RequestContext], contextlib.AbstractContextManager[None]]:
    def caller_read(ctx: RequestContext) -> CallerRead:
        if ctx.access is None:
            # an anonymous caller (type-level $validate needs no token): nothing from the store
            return lambda resource_type, resource_id: None
        return lambda resource_type, resource_id: server.store.get(
            resource_type, resource_id, where=server.interactions.read_filter(ctx, resource_type))

    @contextlib.contextmanager
    def reading_as(ctx: RequestContext) -> Iterator[None]:
        token = _CALLER_READ.set(caller_read(ctx))
        try:
            yield
        finally:
            _CALLER_READ.reset(token)

    return reading_as


def _compile_our_profiles(profiles: ProfileValidator, definitions: Definitions) -> None:
    """Compile the plans of the StructureDefinitions we publish now, so that the first write of
    each type does not pay for it."""
    profiles.prepare(r["url"] for r in [*definitions.local, *definitions.packaged]
                     if r.get("resourceType") == "StructureDefinition" and r.get("url"))


def identify_capability_statement(statement: dict) -> dict:
    """Name the generated CapabilityStatement: a canonical url, the software version as its version."""
    version = (statement.get("software") or {}).get("version")
    named = {"resourceType": "CapabilityStatement", "id": CAPABILITY_ID, "url": CAPABILITY_URL,
             **({"version": version} if version else {}), "name": "EspaceServeurFHIR",
             "title": "Espace - serveur FHIR R4 de l'espace de santé"}
    return {**named, **{k: v for k, v in statement.items() if k not in named}}


def publish_capability_statement(server: FhirServer) -> bool:
    """Store the CapabilityStatement (when it changed), with the other conformance resources."""
    if not publishing_enabled():
        return False
    base_url = server.settings.base_url or "http://localhost/fhir"
    statement = server.capability_statement(base_url)
    current = server.store.get("CapabilityStatement", CAPABILITY_ID)
    if current is not None and {k: v for k, v in current["resource"].items() if k != "meta"} == statement:
        return False
    ctx = RequestContext(base_url=base_url, prefer_return="minimal")
    try:
        server.interactions.update("CapabilityStatement", CAPABILITY_ID, statement, ctx)
    except FhirError as exc:
        if exc.status not in (409, 412):
            raise
        return False                 # another instance starting at the same time stored it first
    return True
