"""`fhir-server validate`: offline validation of files, exit status 0 when every file is valid and 1
when one has an error or cannot be read; issues are printed with their FHIRPath location."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from fhir_server.definitions import PROJECT_ROOT
from fhir_server.formats.xml import resource_to_xml
from fhir_server.loader import read_resource
from fhir_server.validation.cli import register_command, validate_main

EXAMPLES = PROJECT_ROOT / "examples"
INS = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-ins"


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = validate_main(list(argv), out)
    return status, out.getvalue()


def test_valid_files_exit_0() -> None:
    status, output = run(str(EXAMPLES / "patient-ins.json"), str(EXAMPLES / "bundle-vsm-synthese-medicale.json"))
    assert status == 0
    assert "2 of 2 files valid" in output


def test_an_invalid_file_exits_1_and_names_the_element(tmp_path: Path) -> None:
    patient = json.loads((EXAMPLES / "patient-ins.json").read_text(encoding="utf-8"))
    del patient["birthDate"]
    broken = tmp_path / "patient.json"
    broken.write_text(json.dumps(patient), encoding="utf-8")
    status, output = run(str(broken), str(EXAMPLES / "practitioner-rpps.json"))
    assert status == 1
    assert f"{broken}: error [required] Patient.birthDate:" in output
    assert "1 of 2 files valid" in output


def test_profile_option_replaces_the_claimed_profiles(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"resourceType": "Patient", "name": [{"family": "Martin"}]}), encoding="utf-8")
    assert run(str(plain))[0] == 0
    status, output = run(str(plain), "--profile", INS, "--quiet")
    assert status == 1
    assert "Patient.identifier" in output and "warning" not in output


def test_xml_files_are_read(tmp_path: Path) -> None:
    xml = tmp_path / "consent.xml"
    xml.write_bytes(resource_to_xml(read_resource(EXAMPLES / "consent-restrictions.json")))
    assert run(str(xml))[0] == 0


@pytest.mark.parametrize("content", [b"{not json", b"<Patient xmlns='http://hl7.org/fhir'><oops/></Patient>"])
def test_unreadable_files_exit_1(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / ("bad.json" if content.startswith(b"{") else "bad.xml")
    path.write_bytes(content)
    status, output = run(str(path))
    assert status == 1 and str(path) in output


def test_missing_file_exits_1(tmp_path: Path) -> None:
    status, output = run(str(tmp_path / "absent.json"))
    assert status == 1 and "cannot be read" in output


def test_the_sub_command_of_fhir_server(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="fhir-server")
    register_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["validate", str(EXAMPLES / "slot-consultation.json")])
    assert args.func(args) == 0
    assert "slot-consultation.json: OK" in capsys.readouterr().out
