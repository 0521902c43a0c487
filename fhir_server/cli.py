"""`fhir-server` command line: run, serve, load (more subcommands come with their issues)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fhir_server.config import Settings
from fhir_server.definitions.paths import PROJECT_ROOT


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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
