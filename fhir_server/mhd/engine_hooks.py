"""Where document sharing acts before the shared engine:

- Provide bundles (ITI-65) are checked as a whole before the transaction engine runs them
  (entries, profiles, sizes and hashes across entries): a `BundleProcessor.rules` entry.
- A simplified publish (ITI-105) is a plain `POST DocumentReference` carrying its document inline
  that must become a provide bundle: an `Interactions.create_interceptors` entry, which lets every
  other create (including DocumentReferences in bundles) through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.engine.interactions import Interactions
from fhir_server.engine.model import RequestContext, Result
from fhir_server.mhd.documents import is_simplified_publish

BundleCheck = Callable[[dict, RequestContext], dict]
Publish = Callable[[dict, RequestContext, str | None], Result]


def check_bundles_with(bundles: Any, check: BundleCheck) -> None:
    """Run `check(bundle, ctx)` on every bundle posted to the base, before the engine."""
    bundles.rules.append(check)


def publish_inline_documents_with(interactions: Interactions, publish: Publish) -> None:
    """Route `POST DocumentReference` carrying its document inline to `publish`."""

    def intercept(resource_type: str, resource: Any, ctx: RequestContext, if_none_exist: str | None = None,
                  session: Any = None, resource_id: str | None = None) -> Result | None:
        if resource_type == "DocumentReference" and session is None and resource_id is None \
                and isinstance(resource, dict) and is_simplified_publish(resource):
            return publish(resource, ctx, if_none_exist)
        return None

    interactions.create_interceptors.append(intercept)
