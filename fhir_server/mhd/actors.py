"""Who is asking, as the document rules need it: the patient whose space it is, an author of the
document, or a trusted back-end. Answers come from the request's access data and the `_acl`
the access policy computed for the document (its patients and its authors' keys)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from fhir_server.engine.model import RequestContext


@dataclass
class ServerStepContext(RequestContext):
    """The context of a write the server makes itself as a consequence of an authorised request
    (superseding the entry a new document replaces): same actor, same audit, but the business
    rules about who may change what do not apply again."""

    @classmethod
    def of(cls, ctx: RequestContext) -> ServerStepContext:
        return cls(**{f.name: getattr(ctx, f.name) for f in fields(RequestContext)})


def actor_kind(ctx: RequestContext) -> str | None:
    access = ctx.access
    actor = access.actor if access is not None else None
    return actor.kind if actor is not None else None


def is_trusted(ctx: RequestContext) -> bool:
    """No actor (server-side loading), a trusted system, or a step of an authorised request."""
    return isinstance(ctx, ServerStepContext) or actor_kind(ctx) in (None, "system")


def is_owner(ctx: RequestContext, acl: dict | None) -> bool:
    """The patient whose health space holds the resource."""
    if actor_kind(ctx) != "patient" or not acl:
        return False
    return bool(set(ctx.access.patients) & set(acl.get("patients", [])))


def is_author(ctx: RequestContext, acl: dict | None) -> bool:
    """A professional named among the authors (by RPPS, by reference, or through their organisation)."""
    if actor_kind(ctx) != "practitioner" or not acl:
        return False
    return bool(set(ctx.access.keys) & set(acl.get("authors", [])))


def patient_ins(ctx: RequestContext) -> str | None:
    access = ctx.access
    return access.actor.ins if access is not None and access.actor is not None else None
