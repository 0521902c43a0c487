"""A small local terminology service over the loaded CodeSystems and ValueSets (official R4 core
package plus our `terminology/` folder): ValueSet expansion, code validation and display lookup.

There is no remote terminology server: value sets drawing on code systems we do not hold (SNOMED CT,
LOINC, UCUM...) cannot be expanded and are reported as such (None), never guessed."""

from fhir_server.terminology.service import Terminology, strip_version

__all__ = ["Terminology", "strip_version"]
