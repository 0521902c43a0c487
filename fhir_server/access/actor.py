"""The authenticated actor of a request."""

from __future__ import annotations

from dataclasses import dataclass, field

from fhir_server.access.scopes import Scopes

# Roles that never see clinical data, whatever their token says.
NON_CLINICAL_KINDS = frozenset({"insurer", "employer", "state"})
KINDS = frozenset({"patient", "practitioner", "system", "auditor"}) | NON_CLINICAL_KINDS


@dataclass(frozen=True)
class Actor:
    kind: str                                  # patient | practitioner | system | auditor | insurer | ...
    subject: str                               # token `sub`
    scopes: Scopes
    ins: str | None = None                     # patient: INS-NIR
    rpps: str | None = None                    # practitioner: RPPS / national id
    profession: str | None = None              # practitioner: TRE_G15 profession code
    specialty: str | None = None
    organization: str | None = None            # FINESS
    purpose_of_use: str | None = None          # v3-ActReason (TREAT, ETREAT, ...)
    client_id: str | None = None               # the software acting
    name: str | None = None
    claims: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_emergency(self) -> bool:
        return self.kind == "practitioner" and self.purpose_of_use == "ETREAT"

    @property
    def sees_clinical_data(self) -> bool:
        return self.kind not in NON_CLINICAL_KINDS
