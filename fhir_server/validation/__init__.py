"""Validation of resources: structure (official R4 JSON schema) first; profiles and invariants
build on it."""

from fhir_server.validation.structure import StructureValidator

__all__ = ["StructureValidator"]
