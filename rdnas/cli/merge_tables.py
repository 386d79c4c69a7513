"""rdnas merge-tables: merge the shard tables of rdnas proxies into one table."""

import sys

from rdnas.cli.arguments import input_file


def add_parser(commands) -> None:
    merge = commands.add_parser(
        "merge-tables",
        help="merge the shard tables of rdnas proxies into one table",
        description="Merges score tables into one sorted by index; differing columns, an index with different "
        "values in two tables, or (with --complete) missing architectures are errors. Example: rdnas "
        "merge-tables --out nb201_proxies.csv shard0.csv shard1.csv --complete",
    )
    merge.add_argument("tables", nargs="+", type=input_file, help="the tables to merge")
    merge.add_argument("--out", required=True, help="the merged table")
    merge.add_argument("--complete", action="store_true",
                       help="require every architecture of the run the shards come from (as their .meta.json "
                       "sidecars record it: the whole NB201 space, a --limit, an --archs list of any space)")


def run(args) -> int:
    from rdnas.proxies import merge_tables

    try:
        table = merge_tables(args.tables, args.out, expect_complete=args.complete)
    except (ValueError, FileNotFoundError) as error:
        print(f"rdnas merge-tables: error: {error}", file=sys.stderr)
        return 1
    print(f"rdnas merge-tables: {len(table)} rows from {len(args.tables)} tables written to {args.out} "
          f"(columns: {', '.join(table.names)})")
    return 0
