"""The interactions of the FHIR RESTful API, independent of HTTP."""
