"""The implementation guide: the ImplementationGuide resource (`guide.py`), the conformance
resources the server serves (`publish.py`) and the static site for integrators (`site.py`, built
with `python -m fhir_server.ig` / `make ig` into `ig/site/`, served at `/ig/`)."""

from fhir_server.ig.guide import implementation_guide, published_by_us, refresh_source
from fhir_server.ig.site import build_site

__all__ = ["build_site", "implementation_guide", "published_by_us", "refresh_source"]
