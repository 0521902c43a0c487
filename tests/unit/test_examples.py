"""Every example of examples/ is valid FHIR R4 (structure), in every run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_server.definitions import load_definitions
from fhir_server.loader import example_files, read_resource
from fhir_server.validation import StructureValidator

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", list(example_files([EXAMPLES])), ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    validator = StructureValidator(load_definitions())
    issues = validator.validate(read_resource(path))
    assert [i for i in issues if i.severity == "error"] == []


def test_there_are_examples() -> None:
    assert len(list(example_files([EXAMPLES]))) >= 6
