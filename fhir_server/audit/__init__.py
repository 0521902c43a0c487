"""The audit trail: one BALP / TDE AuditEvent per patient concerned by each interaction, written
with the data it describes, chained per patient with SHA-256 hashes so that tampering shows, and
read back by the patient as an access history.

    trail = AuditTrail(store, registry, policy)
    trail.record(AuditRecord("read", 200, actor=..., resource_type=..., patients=[...]), session)
    trail.verify()                       # VerifyReport
    trail.access_history("Patient/x", params, base_url)
    refuse_change("AuditEvent", "update")  # 405
"""

from fhir_server.audit.builder import build_event, build_events, outcome_code
from fhir_server.audit.chain import chain_hash, chain_key
from fhir_server.audit.history import access_history
from fhir_server.audit.immutable import IMMUTABLE_TYPES, refuse_change
from fhir_server.audit.record import INTERACTIONS, AuditRecord
from fhir_server.audit.summary import AccessSummary, summarise
from fhir_server.audit.trail import AUDIT_INDEXES, AuditChainConflict, AuditTrail
from fhir_server.audit.verify import ChainBreak, ChainReport, VerifyReport, verify_chains, verify_main

__all__ = [
    "AUDIT_INDEXES", "IMMUTABLE_TYPES", "INTERACTIONS", "AccessSummary", "AuditChainConflict", "AuditRecord",
    "AuditTrail", "ChainBreak", "ChainReport", "VerifyReport", "access_history", "build_event", "build_events",
    "chain_hash", "chain_key", "outcome_code", "refuse_change", "summarise", "verify_chains", "verify_main",
]
