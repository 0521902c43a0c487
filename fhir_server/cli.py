"""`fhir-server` command line: run, serve, load (more subcommands come with their issues)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fhir_server.config import Settings
from fhir_server.definitions.paths import PROJECT_ROOT
from fhir_server.validation.cli import register_command as register_validate_command


def _serve(settings: Settings, uri: str, load_folders: list[Path]) -> None:
    import uvicorn

    from fhir_server.rest.app import create_app

    app = create_app(settings, uri)
    if load_folders:
        from fhir_server.loader import load

        server = app.state.fhir
        server.start()
        count = load(server, load_folders, f"http://{settings.host}:{settings.port}/fhir")
        print(f"loaded {count} example files from {', '.join(map(str, load_folders))}", flush=True)
    print(f"Espace FHIR server on http://{settings.host}:{settings.port}/fhir", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def cmd_run(args: argparse.Namespace) -> int:
    """Start the embedded database when no URI is configured, load the examples, serve."""
    os.environ.setdefault("FHIR_AUTH_DEV_ISSUER", "1")      # development: trust `fhir-server token`
    settings = Settings()
    database = None
    uri = settings.mongodb_uri
    if uri is None:
        from fhir_server.devdb import start_embedded

        port = int(os.environ.get("FHIR_EMBEDDED_DB_PORT", "27017"))
        database = start_embedded(str(settings.data_dir / "secantus"), port=port)
        uri = database.uri
        print(f"embedded database on {uri} (data in {settings.data_dir})", flush=True)
    try:
        folders = [] if args.no_examples else [PROJECT_ROOT / "examples"]
        _serve(settings, uri, folders)
    except KeyboardInterrupt:
        pass
    finally:
        if database is not None:
            database.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = Settings()
    if settings.mongodb_uri is None:
        print("FHIR_MONGODB_URI is not set (use `fhir-server run` for the embedded database)", file=sys.stderr)
        return 2
    _serve(settings, settings.mongodb_uri, [])
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from fhir_server.loader import load
    from fhir_server.server import FhirServer

    settings = Settings()
    if settings.mongodb_uri is None:
        print("FHIR_MONGODB_URI is not set", file=sys.stderr)
        return 2
    server = FhirServer(settings, settings.mongodb_uri)
    server.start()
    count = load(server, [Path(p) for p in args.paths], settings.base_url or "http://localhost/fhir")
    print(f"loaded {count} files")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a token signed by the local development issuer."""
    from fhir_server.access import devissuer

    if args.actor == "patient":
        claims = devissuer.patient_claims(args.ins)
    elif args.actor == "practitioner":
        claims = devissuer.practitioner_claims(args.rpps, args.profession, args.organization, args.purpose_of_use,
                                               args.specialty)
    else:
        claims = devissuer.system_claims(args.scope, args.client_id)
    print(devissuer.mint(Settings().dev_issuer_dir, claims, args.lifetime))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from fhir_server.audit import verify_main

    if not args.rest or args.rest[0] != "verify":
        print("usage: fhir-server audit verify [--patient Patient/x]", file=sys.stderr)
        return 2
    return verify_main(args.rest[1:])


def _token_parser(commands: argparse._SubParsersAction) -> None:
    token = commands.add_parser("token", help="print a development token (trusted only with FHIR_AUTH_DEV_ISSUER)")
    token.add_argument("--lifetime", type=int, default=8 * 3600, help="seconds (default 8 hours)")
    actors = token.add_subparsers(dest="actor", required=True)
    patient = actors.add_parser("patient")
    patient.add_argument("--ins", required=True, help="the patient's INS-NIR")
    practitioner = actors.add_parser("practitioner")
    practitioner.add_argument("--rpps", required=True)
    practitioner.add_argument("--profession", required=True, help="TRE_G15 profession code (10 = médecin)")
    practitioner.add_argument("--organization", help="FINESS of the organisation")
    practitioner.add_argument("--purpose-of-use", help="v3-ActReason code: TREAT (default) or ETREAT (emergency)")
    practitioner.add_argument("--specialty", help="specialty code (TRE_R38)")
    system = actors.add_parser("system")
    system.add_argument("--scope", required=True, help='SMART scopes, e.g. "system/DocumentReference.cr"')
    system.add_argument("--client-id", default="dev-client")
    token.set_defaults(func=cmd_token)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-server", description="Espace FHIR R4 server")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="embedded database + examples + server (development)")
    run.add_argument("--no-examples", action="store_true", help="do not load examples/")
    run.set_defaults(func=cmd_run)
    commands.add_parser("serve", help="serve against FHIR_MONGODB_URI").set_defaults(func=cmd_serve)
    load = commands.add_parser("load", help="load resources / bundles into FHIR_MONGODB_URI")
    load.add_argument("paths", nargs="+")
    load.set_defaults(func=cmd_load)
    _token_parser(commands)
    register_validate_command(commands)
    audit = commands.add_parser("audit", help="audit trail tools: `audit verify [--patient Patient/x]`")
    audit.add_argument("rest", nargs=argparse.REMAINDER, help="verify [--patient Patient/x]")
    audit.set_defaults(func=cmd_audit)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
