"""FHIR search: SearchParameter-driven indexing and querying on MongoDB.

Write time: `SearchRegistry.extract_index(resource)` computes the `_index` sub-document stored
with the resource (values of every search parameter, normalised; see `index.py`).
Read time: `SearchService.search(...)` parses the query, compiles it into flat MongoDB filters
(`criteria.py`, `query.py`), pages with keyset cursors (`paging.py`) and builds the searchset
Bundle with includes (`includes.py`, `bundle.py`). Contained resources (`_contained`) are indexed
with their container and searched through it (`contained.py`).
"""

from fhir_server.search.registry import SearchParam, SearchRegistry
from fhir_server.search.service import SearchService

__all__ = ["SearchParam", "SearchRegistry", "SearchService"]
