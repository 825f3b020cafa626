"""``python -m edgevit.distributed COMMAND``: the distributed subcommands on their own (tests, boards)."""

import argparse
import sys

from ..errors import EdgevitError
from .cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevit.distributed")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EdgevitError as exc:
        print(f"edgevit: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
