"""Composition root: builds the server's parts from the settings, with no HTTP in sight.

`FhirServer` is what the REST layer, the CLI and the tests drive.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fhir_server.access.actor import Actor
from fhir_server.access.devissuer import dev_issuer
from fhir_server.access.policy import IDENTITY_TYPES, AccessPolicy
from fhir_server.access.tokens import Authenticator, TrustedIssuer
from fhir_server.config import Settings
from fhir_server.definitions import Definitions, load_definitions
from fhir_server.engine.bundles import BundleProcessor
from fhir_server.engine.capabilities import capability_statement
from fhir_server.engine.errors import FhirError, bad_request, error, operation_outcome
from fhir_server.engine.interactions import Interactions, WriteEvent
from fhir_server.engine.model import RequestContext, Result
from fhir_server.engine.operations import Operation, OperationCall, OperationRegistry
from fhir_server.search import SearchParam, SearchRegistry, SearchService
from fhir_server.storage import MongoStore
from fhir_server.validation import StructureValidator

# Business modules (DMP/MHD documents, medical summary, vaccination, agenda, messaging, audit,
# notifications) each expose `install(server: FhirServer) -> None`, where they register their
# operations (server.operations), write rules and hooks (server.interactions.write_rules /
# write_hooks) and anything else they need. They are installed in this order.
MODULE_NAMES: tuple[str, ...] = (
    "fhir_server.validation.module",     # profiles enforced on write, $validate, terminology operations
    "fhir_server.audit.module",          # one AuditEvent per interaction, $access-history
    "fhir_server.notify",                # notifications to the patient, Subscriptions
    "fhir_server.mhd",                   # DMP documents: IHE MHD / ANS PDSm
    "fhir_server.vsm",                   # medical summary (Composition, $document, CDA)
    "fhir_server.vaccination",           # Immunization, $vaccination-status
    "fhir_server.agenda",                # Appointment states, reminders
    "fhir_server.messaging",             # Communication between professionals and patients
)


def business_modules() -> list[Any]:
    return [importlib.import_module(name) for name in MODULE_NAMES]


@dataclass
class AccessEvent:
    """An interaction as the access observers see it once it is answered."""

    ctx: RequestContext
    interaction: str                  # read, vread, search-type, search-system, search-compartment,
    resource_type: str | None         # history-*, operation, create, update, patch, delete, ...
    resource_id: str | None = None
    compartment: tuple[str, str] | None = None
    query: list[tuple[str, str]] = field(default_factory=list)
    operation: str | None = None
    status: int = 0
    body: dict | None = None
    version: str | None = None
    error: FhirError | None = None


_WRITE_INTERACTIONS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _describe_get(segments: list[str]) -> tuple[str, str | None, str | None, tuple[str, str] | None]:
    """(interaction, resource type, id, compartment) of a GET path."""
    if not segments:
        return "search-system", None, None, None
    if segments == ["metadata"]:
        return "capabilities", None, None, None
    if segments == ["_history"]:
        return "history-system", None, None, None
    resource_type, rest = segments[0], segments[1:]
    if not rest:
        return "search-type", resource_type, None, None
    if rest == ["_history"]:
        return "history-type", resource_type, None, None
    if len(rest) == 1:
        return "read", resource_type, rest[0], None
    if rest[1] == "_history":
        return ("vread" if len(rest) == 3 else "history-instance"), resource_type, rest[0], None
    return "search-compartment", rest[1], None, (resource_type, rest[0])


def _trusted_issuers(settings: Settings) -> list[TrustedIssuer]:
    issuers = []
    if settings.auth_issuer and settings.auth_audience and settings.auth_jwks:
        issuers.append(TrustedIssuer(settings.auth_issuer, settings.auth_audience, settings.auth_jwks))
    if settings.dev_issuer:
        issuers.append(dev_issuer(settings.dev_issuer_dir))
    return issuers


def _same_definition(known: dict | None, new: dict) -> bool:
    def essence(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in ("meta", "id", "text")}
    return known is not None and essence(known) == essence(new)


def _patient_of(consent: dict) -> str | None:
    reference = (consent.get("patient") or {}).get("reference")
    if not isinstance(reference, str) or "Patient/" not in reference:
        return None
    return "Patient/" + reference.rsplit("Patient/", 1)[1]


def _software_version() -> str:
    try:
        return version("espace-fhir-server")
    except PackageNotFoundError:
        return "dev"


class FhirServer:
    def __init__(self, settings: Settings, mongodb_uri: str, definitions: Definitions | None = None) -> None:
        self.settings = settings
        self.definitions = definitions or load_definitions()
        self.store = MongoStore(mongodb_uri, settings.mongodb_db)
        self.search_registry = SearchRegistry(self.definitions)
        self.search = SearchService(self.search_registry, self.store)
        self.validator = StructureValidator(self.definitions)
        self.policy = AccessPolicy(self.definitions, self.store, self._lookup)
        self.authenticator = Authenticator(_trusted_issuers(settings))
        self.interactions = Interactions(self.store, self.search_registry, self.search, self.validator.validate,
                                         self.policy)
        self.interactions.write_hooks.append(self._on_write)
        self.interactions.write_hooks.append(self.search.on_write)      # containers, for `_contained` searches
        self.bundles = BundleProcessor(self.definitions, self.interactions, self.get,
                                       max_entries=settings.max_bundle_entries)
        self.operations = OperationRegistry()
        self._register_core_operations()
        # Filled by business modules: extra indexes, start-up steps, background services
        # (objects with start() and stop()).
        self.extra_indexes: dict[str, list[list[tuple[str, int]]]] = {}
        self.startup_hooks: list[Callable[[], None]] = []
        self.services: list[Any] = []
        self.capability_amendments: list[Callable[[dict], dict]] = []   # e.g. the PDSm server role
        self.binary_content: Any = None                                  # large Binaries (GridFS), set by mhd
        # Called for every read, search, history and operation, and for refused requests.
        self.access_observers: list[Callable[[AccessEvent], None]] = []
        # Business rules on searches of a type (e.g. ITI-67 requires patient and status):
        # (ctx, resource_type, params) -> None, raising FhirError to refuse.
        self.search_rules: list[Callable[[RequestContext, str, list[tuple[str, str]]], None]] = []
        # Rewrites of a search's parameters, after the rules: (resource_type, params) -> params
        # (e.g. MHD's `author.given` names a parameter on the contained author; ITI-67 answers carry a total).
        self.search_rewrites: list[Callable[[str, list[tuple[str, str]]], list[tuple[str, str]]]] = []
        for module in business_modules():
            module.install(self)

    def start(self) -> None:
        self.store.ping()
        specs = self.search_registry.index_specs()
        for collection, extra in self.extra_indexes.items():
            specs.setdefault(collection, []).extend(extra)
        self.store.ensure_collections(specs)
        self._register_stored_search_parameters()
        self.search.upgrade_index_layout()
        self.policy.upgrade_stored_acls()
        for hook in self.startup_hooks:
            hook()
        for service in self.services:
            service.start()

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.store.close()

    # -- access ------------------------------------------------------------------------------
    def _lookup(self, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
        return self.search.matching_ids(resource_type, params, limit=50)

    def context_for(self, ctx: RequestContext, actor: Actor | None) -> RequestContext:
        ctx.access = self.policy.request_access(actor)
        return ctx

    def _on_write(self, event: WriteEvent) -> None:
        self.policy.on_write(event)          # history and audit trail follow the new access data
        if event.resource_type in IDENTITY_TYPES:
            self.policy.identities_changed()
        if event.resource_type == "SearchParameter" and event.new is not None:
            self._register_search_parameter(event.new)
        if event.resource_type == "Consent":
            for patient in {_patient_of(r) for r in (event.old, event.new) if r is not None} - {None}:
                consents = [d["resource"] for d in self.store.find("Consent", {"_acl.patients": patient},
                                                                    session=event.session)]
                self.policy.refresh_consent_state(patient, consents, event.session)

    def _register_search_parameter(self, definition: dict) -> None:
        """A SearchParameter written at runtime is compiled (an invalid one aborts its write with
        400), indexed, and existing resources of its base types are reindexed."""
        if definition.get("status") == "retired" or _same_definition(
                self.search_registry.definition(definition.get("url", "")), definition):
            return
        types = self.search_registry.register(definition)
        specs = self.search_registry.index_specs()
        self.store.ensure_collections({t: specs.get(t, []) for t in types})
        self.search.reindex(types)

    def _register_stored_search_parameters(self) -> None:
        """At start: SearchParameters POSTed at runtime live in the store; compile them again."""
        for doc in self.store.find("SearchParameter", {}):
            definition = doc["resource"]
            if definition.get("status") != "retired" and self.search_registry.definition(definition.get("url", "")) \
                    is None:
                self.search_registry.register(definition)

    # -- GET dispatch (REST layer and GET entries of bundles) --------------------------------
    def get(self, path: str, query: list[tuple[str, str]], ctx: RequestContext) -> Result:
        """Run a GET on a path relative to the base (read, vread, history, search) and let the
        access observers (audit, notifications) see it, failures included."""
        segments = [s for s in path.split("?", 1)[0].strip("/").split("/") if s]
        event = AccessEvent(ctx, *_describe_get(segments), query=query)
        if event.interaction == "capabilities":
            return self._get(segments, path, query, ctx)
        try:
            result = self._get(segments, path, query, ctx)
        except FhirError as exc:
            event.status, event.error = exc.status, exc
            self.observe(event)
            raise
        event.status, event.body = result.status, result.body
        event.version = result.version_id
        self.observe(event)
        return result

    def call_operation(self, call: OperationCall) -> Result:
        event = AccessEvent(call.ctx, "operation", call.resource_type, call.resource_id, query=call.arguments,
                            operation=call.name)
        try:
            result = self.operations.call(call)
        except FhirError as exc:
            event.status, event.error = exc.status, exc
            self.observe(event)
            raise
        event.status, event.body = result.status, result.body
        self.observe(event)
        return result

    def observe(self, event: AccessEvent) -> None:
        """Tell the observers; an observer that fails (the audit cannot be written) fails the
        request: there is no unaudited access."""
        event.ctx.observed = True
        for observer in self.access_observers:
            observer(event)

    def observe_refusal(self, ctx: RequestContext, method: str, path: str, query: list[tuple[str, str]],
                        exc: FhirError) -> None:
        """A request refused before or outside the observed paths (401, a denied or failed write,
        a failed transaction): it is audited too."""
        segments = [s for s in path.strip("/").split("/") if s]
        interaction, resource_type, resource_id, compartment = _describe_get(segments)
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            interaction = _WRITE_INTERACTIONS[method] if segments else "transaction"
            if segments and segments[-1].startswith("$"):
                interaction = "operation"
        if interaction == "capabilities":
            return
        try:
            self.observe(AccessEvent(ctx, interaction, resource_type, resource_id, compartment, query,
                                     status=exc.status, error=exc))
        except FhirError as failure:
            # The refusal itself could not be audited (e.g. 503, audit chain busy): the caller
            # answers `exc`, so that failure becomes the answer rather than escaping as a 500.
            exc.status, exc.issues, exc.headers = failure.status, failure.issues, failure.headers

    def _get(self, segments: list[str], path: str, query: list[tuple[str, str]], ctx: RequestContext) -> Result:
        if not segments:
            return Result(200, self._search(None, query, ctx))
        if segments == ["_history"]:
            return Result(200, self.interactions.history(None, None, query, ctx))
        resource_type = segments[0]
        if resource_type == "metadata" and len(segments) == 1:
            return Result(200, self.capability_statement(ctx.base_url))
        self.require_type(resource_type)
        rest = segments[1:]
        if not rest:
            return Result(200, self._search(resource_type, query, ctx))
        if rest == ["_history"]:
            return Result(200, self.interactions.history(resource_type, None, query, ctx))
        resource_id = rest[0]
        if len(rest) == 1:
            return self.interactions.read(resource_type, resource_id, ctx)
        if rest[1] == "_history" and len(rest) == 2:
            return Result(200, self.interactions.history(resource_type, resource_id, query, ctx))
        if rest[1] == "_history" and len(rest) == 3:
            return self.interactions.vread(resource_type, resource_id, rest[2], ctx)
        if len(rest) == 2 and self.definitions.is_resource_type(rest[1]):
            if resource_type not in self.definitions.compartments:
                raise bad_request(f"{resource_type} is not a compartment")
            return Result(200, self._search(rest[1], query, ctx, compartment=(resource_type, resource_id)))
        raise error(404, "not-found", f"Unknown path {path}")

    def search_as(self, ctx: RequestContext, resource_type: str, params: list[tuple[str, str]]) -> dict:
        """A search with the caller's rights (scopes and access filter) as one step of an
        operation: the operation is audited as a whole, its inner look-ups are not separate
        accesses, and searches rules for clients (e.g. ITI-67's) do not apply to them."""
        if ctx.access is not None:
            self.policy.check_interaction(ctx.access, resource_type, "search")
        return self.search.search(resource_type, params, base_url=ctx.base_url, extra_filter=self._access_filter(ctx))

    def _search(self, resource_type: str | None, query: list[tuple[str, str]], ctx: RequestContext,
                compartment: tuple[str, str] | None = None) -> dict:
        if resource_type is not None and ctx.access is not None:
            self.policy.check_interaction(ctx.access, resource_type, "search")
        if resource_type is not None and compartment is None:
            for rule in self.search_rules:
                rule(ctx, resource_type, query)
        if resource_type is not None:
            for rewrite in self.search_rewrites:
                query = rewrite(resource_type, query)
        ctx.found_acls = {}
        return self.search.search(resource_type, query, base_url=ctx.base_url, strict=ctx.strict_handling,
                                  extra_filter=self._access_filter(ctx),
                                  compartment=compartment, found_acls=ctx.found_acls)

    def require_type(self, resource_type: str) -> None:
        if not self.definitions.is_resource_type(resource_type):
            raise error(404, "not-supported", f"'{resource_type}' is not a FHIR R4 resource type")

    def capability_statement(self, base_url: str) -> dict:
        params: dict[str, dict[str, SearchParam]] = {
            t: self.search_registry.params_for(t) for t in self.definitions.resource_types
        }
        statement = capability_statement(self.definitions, params, self.operations, base_url, _software_version())
        for amend in self.capability_amendments:
            statement = amend(statement)
        return statement

    # -- operations --------------------------------------------------------------------------
    def _register_core_operations(self) -> None:
        self.operations.register(Operation(
            name="validate", handler=self._validate_operation, instance=True,
            definition="http://hl7.org/fhir/OperationDefinition/Resource-validate",
            documentation="Structural validation against the FHIR R4 definitions"))
        self.operations.register(Operation(
            name="everything", handler=self._everything_operation, resource_types=("Patient",), type_level=False,
            # ours: the core definition's type level (every patient the caller may see) is not served
            instance=True, definition="https://espace.example.org/fhir/OperationDefinition/Patient-everything",
            documentation="Every resource of the patient's compartment the caller may see"))

    def _everything_operation(self, call: OperationCall) -> Result:
        if call.ctx.access is not None:
            self.policy.check_interaction(call.ctx.access, "Patient", "read")
        self.interactions.read("Patient", call.resource_id, call.ctx)       # 404 when not visible
        return Result(200, self.search.everything(call.resource_id, call.arguments, base_url=call.ctx.base_url,
                                                  extra_filter=self._access_filter(call.ctx)))

    def _access_filter(self, ctx: RequestContext) -> Callable[[str], dict | None]:
        """The per-type access filter the search engine ANDs into every query it runs (matches,
        includes, chains, _has), since their types differ."""
        return lambda resource_type: self.interactions.read_filter(ctx, resource_type)

    def _validate_operation(self, call: OperationCall) -> Result:
        resource = call.body
        if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
            resource = next((p.get("resource") for p in resource.get("parameter", [])
                             if p.get("name") == "resource"), None)
        if resource is None and call.resource_id:
            resource = self.interactions.read(call.resource_type, call.resource_id, call.ctx).body
        if resource is None:
            raise bad_request("$validate needs a resource in the body (or a Parameters with a 'resource' part)")
        issues = self.validator.validate(resource, call.resource_type)
        return Result(200, operation_outcome(issues))
