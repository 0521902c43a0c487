"""Secure messaging between professionals and patients (Communication).

- Conversations: the first message opens a thread, replies reference it in `inResponseTo`; the
  `conversation` SearchParameter (`profiles/search-parameters/Espace-Communication-conversation.json`,
  loaded and published with our other conformance resources) finds a whole thread:
  `Communication?conversation=Communication/[first]&_sort=sent`.
- Search by patient, sender, recipient, sent / received dates, status: core R4 parameters.
- Rules (`rules.py`): who may open, reply and write to whom; attachments; immutability of sent
  messages; read receipts (`received`).
- Notifications of new messages are the `notify` module's: nothing here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from fhir_server.definitions.paths import PROJECT_ROOT
from fhir_server.messaging.rules import MessagingRules

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

CONVERSATION_PARAMETER = PROJECT_ROOT / "profiles" / "search-parameters" / "Espace-Communication-conversation.json"


def conversation_parameter() -> dict:
    return json.loads(CONVERSATION_PARAMETER.read_text(encoding="utf-8"))


def install(server: FhirServer) -> None:
    parameter = conversation_parameter()
    server.search_registry.register(parameter)        # whatever definitions the server was built with
    server.interactions.write_rules.append(MessagingRules(server.interactions))
    server.startup_hooks.append(lambda: _index_existing_messages(server, parameter))


def _index_existing_messages(server: FhirServer, parameter: dict) -> None:
    """Messages stored before this version of the parameter get their `conversation` values, once
    (a marker in the server state remembers it was done)."""
    marker = f"searchparameter:{parameter['url']}"
    done = server.store.get_meta(marker)
    if done is not None and done.get("version") == parameter["version"]:
        return
    server.search.reindex(["Communication"])
    server.store.put_meta(marker, {"version": parameter["version"]})
