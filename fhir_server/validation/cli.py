"""`fhir-server validate FILE... [--profile URL]`: validate resources offline, without a database,
with the server's own validators (JSON schema, StructureDefinitions, invariants, local
terminology). Without `--profile`, each resource is held to what the server would enforce on a
create: the profiles it claims and the profile required for its type. References to other
resources are not resolved (no store), except inside the file (contained resources, Bundle
entries).

Prints one line per issue (`file: severity [code] expression: diagnostics`) and exits 1 when any
resource has an error (or a file cannot be read), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from fhir_server.definitions import load_definitions
from fhir_server.engine.errors import FhirError, Issue
from fhir_server.loader import read_resource
from fhir_server.terminology import Terminology
from fhir_server.validation.operation import ResourceValidation, errors_in, requirements_from_env
from fhir_server.validation.profile import ProfileValidator
from fhir_server.validation.structure import StructureValidator


def build_validation() -> ResourceValidation:
    """The server's validation, without a store to resolve references from."""
    definitions = load_definitions()
    profiles = ProfileValidator(definitions, Terminology(definitions))
    return ResourceValidation(StructureValidator(definitions), profiles, requirements_from_env())


def register_command(commands: argparse._SubParsersAction) -> None:
    """Add `validate` to the `fhir-server` sub-commands."""
    parser = commands.add_parser("validate", help="validate resource files offline (JSON or XML)",
                                 description="Validate FHIR resources (JSON or XML files) offline")
    _arguments(parser)
    parser.set_defaults(func=lambda args: run(args))


def validate_main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of `fhir-server validate FILE... [--profile URL]`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="fhir-server validate",
                                     description="Validate FHIR resources (JSON or XML files) offline")
    _arguments(parser)
    return run(parser.parse_args(argv), out)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="resource or Bundle files (.json, .xml)")
    parser.add_argument("--profile", action="append", default=[], metavar="URL",
                        help="validate against this profile (repeatable) instead of the claimed / required ones")
    parser.add_argument("--quiet", action="store_true", help="print errors only")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    validation = build_validation()
    failed = 0
    for path in args.files:
        issues = _validate_file(validation, path, args.profile or None)
        shown = errors_in(issues) if args.quiet else [i for i in issues if i.severity != "information"]
        for issue in shown:
            print(format_issue(path, issue), file=out)
        if errors_in(issues):
            failed += 1
        elif not args.quiet:
            print(f"{path}: OK", file=out)
    if len(args.files) > 1:
        print(f"{len(args.files) - failed} of {len(args.files)} files valid", file=out)
    return 1 if failed else 0


def _validate_file(validation: ResourceValidation, path: Path, profiles: list[str] | None) -> list[Issue]:
    try:
        resource = read_resource(path)
    except FhirError as exc:
        return exc.issues or [Issue("fatal", "structure", f"{path} cannot be parsed")]
    except (OSError, ValueError) as exc:
        return [Issue("fatal", "exception", f"{path} cannot be read: {exc}")]
    return validation.validate(resource, None, profiles, for_write=profiles is None)


def format_issue(path: Path, issue: Issue) -> str:
    where = ", ".join(issue.expression)
    return f"{path}: {issue.severity} [{issue.code}] {where + ': ' if where else ''}{issue.diagnostics}"


if __name__ == "__main__":
    sys.exit(validate_main())
