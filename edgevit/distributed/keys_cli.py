"""``edgevit keys DIR --members host,pi1,pi2``: CURVE keys for the data plane of a cluster.

``register(subparsers)`` adds the subcommand; the handler returns an exit code and raises ``edgevit.errors``
classes for problems the user can fix.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .dataplane import make_keys


def cmd_keys(args) -> int:
    """Write the keys and say which files go to which machine."""
    members = [m.strip() for m in args.members.split(",") if m.strip()]
    if not members:
        raise InputError("--members is empty: name the host and every node, e.g. --members host,pi1,pi2")
    folder = Path(args.dir)
    for path in make_keys(folder, members):
        print(f"wrote {path}")
    print(f"\nCURVE keys for {len(members)} members in {folder}. Copy to each machine:")
    for m in members:
        print(f"  {m}: {folder / 'private' / (m + '.key_secret')} into its own private/ folder "
              f"(owner-only, never to another machine), and the whole {folder / 'public'}/ folder")
    print("On each machine, a folder with public/ and private/<member>.key_secret is that member's key folder. "
          "A member talks only to peers whose public key is in its public/ folder.")
    return 0


def register(subparsers) -> None:
    """Add ``keys`` to an argparse subparsers object."""
    p = subparsers.add_parser("keys", help="make CURVE keys for the data plane (one keypair per member)")
    p.add_argument("dir", help="folder to write public/ and private/ into (existing keys are never overwritten)")
    p.add_argument("--members", required=True,
                   help="comma-separated member names, e.g. host,pi1,pi2 ([A-Za-z0-9_.-]+)")
    p.set_defaults(func=cmd_keys)


def add_security_arguments(parser, member_help: str) -> None:
    """``--keys DIR --member NAME`` (CURVE) or ``--insecure-plaintext``, for every command with a data plane."""
    parser.add_argument("--keys", metavar="DIR", help="this member's key folder from `edgevit keys` (public/ and "
                        "private/MEMBER.key_secret): the data plane is authenticated and encrypted with CURVE")
    parser.add_argument("--member", help=member_help)
    parser.add_argument("--insecure-plaintext", action="store_true",
                        help="data plane without authentication or encryption (trusted networks only)")


def security_from_args(args, default_member: str):
    """The ``Security`` the arguments ask for.

    Raises
    ------
    InputError
        Neither keys nor the plain-text flag, or both.
    """
    from .dataplane import Security

    if args.insecure_plaintext and args.keys:
        raise InputError("give either --keys DIR or --insecure-plaintext, not both")
    if args.insecure_plaintext:
        return Security.plaintext()
    if not args.keys:
        raise InputError("the data plane needs keys: make them with `edgevit keys DIR --members host,NODE,...` "
                         "and pass --keys DIR --member NAME (or --insecure-plaintext on a trusted network)")
    return Security.curve(Path(args.keys), args.member or default_member)
