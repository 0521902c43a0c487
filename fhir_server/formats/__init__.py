"""Wire formats: FHIR JSON (decimals kept exactly as written) and FHIR XML."""
