"""A readable account of one AuditEvent for the patient: who, when, what, how.

Derived from the stored AuditEvent alone (not from the request), so it reads the same for every
event of the chain, whichever version of the server wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.audit import codes as c

VERBS = {
    "read": "read", "vread": "read a past version of", "search": "searched", "search-type": "searched",
    "search-system": "searched", "history-instance": "viewed the history of", "history-type": "viewed the history of",
    "history-system": "viewed the history of", "create": "added", "update": "modified", "patch": "modified",
    "delete": "deleted", "operation": "ran an operation on", "transaction": "sent a bundle touching",
    "batch": "sent a bundle touching",
}


@dataclass
class AccessSummary:
    when: str
    how: str                                   # restful-interaction code, or "consent-refused"
    who: str | None = None                     # the person's (or software's) name
    rpps: str | None = None
    profession: dict | None = None             # TRE_G15 coding
    organization: str | None = None            # FINESS
    software: str | None = None                # client id
    what: list[str] = field(default_factory=list)
    emergency: bool = False
    refused: bool = False
    failed: bool = False
    self_access: bool = False

    @property
    def text(self) -> str:
        who = "You" if self.self_access else (self.who or "An unidentified user")
        details = [f"RPPS {self.rpps}" if self.rpps else None,
                   (self.profession or {}).get("display") or (self.profession or {}).get("code"),
                   f"organisation FINESS {self.organization}" if self.organization else None]
        shown = ", ".join(d for d in details if d)
        if shown and not self.self_access:
            who += f" ({shown})"
        what = ", ".join(self.what) if self.what else "your record"
        if self.refused:
            sentence = f"{who} was refused access to {what} by your consent settings"
        else:
            sentence = f"{who} {VERBS.get(self.how, self.how)} {what}"
        if self.software and not self.self_access:
            sentence += f" using {self.software}"
        if self.emergency:
            sentence += ", as an emergency access"
        if self.failed and not self.refused:
            sentence += " (the request failed)"
        return f"{self.when}: {sentence}"

    def to_extension(self) -> dict:
        parts: list[dict] = [{"url": "text", "valueString": self.text}, {"url": "when", "valueDateTime": self.when},
                             {"url": "how", "valueCode": self.how}]
        if self.who:
            parts.append({"url": "who", "valueString": self.who})
        if self.rpps:
            parts.append({"url": "rpps", "valueIdentifier": {"system": c.RPPS_SYSTEM, "value": self.rpps}})
        if self.profession:
            parts.append({"url": "profession", "valueCoding": self.profession})
        if self.organization:
            parts.append({"url": "organization", "valueIdentifier": {
                "system": c.STRUCTURE_SYSTEM, "value": c.structure_id_of_finess(self.organization)}})
        if self.software:
            parts.append({"url": "software", "valueString": self.software})
        parts += [{"url": "what", "valueString": item} for item in self.what]
        parts += [{"url": "emergency", "valueBoolean": self.emergency},
                  {"url": "refused", "valueBoolean": self.refused},
                  {"url": "self", "valueBoolean": self.self_access}]
        return {"url": c.SUMMARY_URL, "extension": parts}


def summarise(event: dict, patient: str | None = None) -> AccessSummary:
    subtype = (event.get("subtype") or [{}])[0]
    refused = subtype.get("system") == c.AUTHZ_SUBTYPE
    user = _requestor(event)
    who = (user or {}).get("who") or {}
    identifier = who.get("identifier") or {}
    summary = AccessSummary(
        when=event.get("recorded", ""),
        how="consent-refused" if refused else subtype.get("code", "unknown"),
        who=who.get("display") or (user or {}).get("name"),
        rpps=identifier.get("value") if identifier.get("system") == c.RPPS_SYSTEM else None,
        profession=_profession(user),
        organization=_organization(user),
        software=_software(event),
        what=_what(event),
        emergency=_emergency(event),
        refused=refused,
        failed=event.get("outcome", "0") != "0",
        self_access=bool(patient) and who.get("reference") == patient,
    )
    return summary


def _requestor(event: dict) -> dict | None:
    agents = event.get("agent") or []
    return next((a for a in agents if a.get("requestor")), agents[0] if agents else None)


def _profession(agent: dict | None) -> dict | None:
    for role in (agent or {}).get("role", []) or []:
        for coding in role.get("coding", []) or []:
            if coding.get("system") == c.PROFESSION_SYSTEM:
                return coding
    return None


def _organization(agent: dict | None) -> str | None:
    for extension in (agent or {}).get("extension", []) or []:
        if extension.get("url") == c.ORGANIZATION_URL:
            value = ((extension.get("valueReference") or {}).get("identifier") or {}).get("value")
            return c.finess_of_structure_id(value) if isinstance(value, str) else None
    return None


def _software(event: dict) -> str | None:
    for agent in event.get("agent", []) or []:
        codings = ((agent.get("type") or {}).get("coding")) or []
        if any(x.get("system") == c.DCM and x.get("code") == c.APPLICATION["code"] for x in codings):
            return ((agent.get("who") or {}).get("identifier") or {}).get("value")
    return None


def _what(event: dict) -> list[str]:
    """Titles of the data touched (or their resource types), in the event's order."""
    items: list[str] = []
    for entity in event.get("entity", []) or []:
        if (entity.get("type") or {}).get("code") != c.ENTITY_SYSTEM_OBJECT["code"]:
            continue
        if (entity.get("role") or {}).get("code") == c.ROLE_QUERY["code"]:
            continue
        reference = (entity.get("what") or {}).get("reference", "")
        items.append(entity.get("name") or reference.split("/", 1)[0] or "data")
    return items


def _emergency(event: dict) -> bool:
    for agent in event.get("agent", []) or []:
        for purpose in agent.get("purposeOfUse", []) or []:
            if any(x.get("code") == "ETREAT" for x in purpose.get("coding", []) or []):
                return True
    return False
