"""`python -m fhir_server.ig [--out DIR] [--no-refresh]`: refresh the resource list of
`ig/ImplementationGuide-espace.json` and build the static site (default `ig/site/`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fhir_server.definitions import load_definitions
from fhir_server.ig.guide import IG_SOURCE, refresh_source
from fhir_server.ig.site import SITE_DIR, build_site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fhir_server.ig", description="Build the Espace IG site")
    parser.add_argument("--out", type=Path, default=SITE_DIR, help=f"output folder (default {SITE_DIR})")
    parser.add_argument("--no-refresh", action="store_true",
                        help=f"do not rewrite the resource list of {IG_SOURCE.name}")
    args = parser.parse_args(argv)
    definitions = load_definitions()
    if not args.no_refresh and refresh_source(definitions):
        print(f"updated the resource list of {IG_SOURCE}")
    written = build_site(definitions, args.out)
    print(f"built {len(written)} files into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
