"""Where the downloaded official definitions are cached (an ignored folder, never committed)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def definitions_dir() -> Path:
    return Path(os.environ.get("FHIR_DEFINITIONS_DIR", PROJECT_ROOT / ".cache" / "definitions"))


def core_package_dir() -> Path:
    return definitions_dir() / "hl7.fhir.r4.core-4.0.1"


def schema_path() -> Path:
    return definitions_dir() / "fhir.schema.json"
