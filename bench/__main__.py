"""`python -m bench [crud] [--operations N]` prints the benchmark figures for this machine."""

from __future__ import annotations

import argparse

from bench import access, crud, mhd, pillars, search, validation


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("workload", nargs="?", default="all",
                        choices=["crud", "access", "search", "pillars", "validation", "mhd", "all"])
    parser.add_argument("--operations", type=int, default=300)
    parser.add_argument("--resources", type=int, default=100_000, help="population size of the search benchmark")
    args = parser.parse_args()
    if args.workload in ("crud", "all"):
        crud.main(args.operations)
    if args.workload in ("access", "all"):
        access.main(args.operations)
    if args.workload in ("mhd", "all"):
        mhd.main(bundles=200, documents=500, operations=args.operations)
    if args.workload in ("validation", "all"):
        validation.main(args.operations)
    if args.workload in ("pillars", "all"):
        pillars.main(args.operations)
    if args.workload in ("search", "all"):
        search.main(args.resources, args.operations)


if __name__ == "__main__":
    main()
