"""Espace: a FHIR R4 server for the French patient health space."""

FHIR_VERSION = "4.0.1"
