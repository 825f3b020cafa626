"""``python -m edgevit.distributed COMMAND``: the distributed subcommands on their own (tests, boards)."""

import sys

from ..cli import _Parser
from ..errors import EdgevitError
from .cli import register


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m edgevit.distributed")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    try:
        args = parser.parse_args(argv)  # a usage error is one line too
        return args.func(args)
    except EdgevitError as exc:
        print(f"edgevit: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
