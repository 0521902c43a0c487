"""Shared fixtures: a real database process for the whole session (the embedded MongoDB-wire
server, or a real MongoDB when FHIR_TEST_MONGODB_URI is set), one throw-away database per test
module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from fhir_server.devdb import start_embedded

# Publishing our ~115 conformance resources at each app start costs about a second per test
# module; the modules that test publication turn it back on.
os.environ.setdefault("FHIR_PUBLISH_CONFORMANCE", "off")


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    uri = os.environ.get("FHIR_TEST_MONGODB_URI")
    if uri:
        yield uri
        return
    database = start_embedded(":memory:")
    try:
        yield database.uri
    finally:
        database.stop()


@pytest.fixture(scope="module")
def database_name() -> str:
    return "fhirtest_" + uuid.uuid4().hex[:12]
