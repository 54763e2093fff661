"""``vision keys create|revoke|list``: the service's API keys (``VISION_API_KEYS_FILE``)."""

from __future__ import annotations

import os


def add_commands(sub) -> None:
    k = sub.add_parser("keys", help="API keys of the REST service")
    k = k.add_subparsers(dest="cmd", required=True)
    default = os.environ.get("VISION_API_KEYS_FILE")
    for name, helptext, func in (
        ("create", "make a key for NAME: its hash is stored, the key printed once", cmd_create),
        ("revoke", "remove NAME's key (a running service refuses it within a second)", cmd_revoke),
    ):
        c = k.add_parser(name, help=helptext)
        c.add_argument("name")
        c.add_argument(
            "--file",
            default=default,
            required=default is None,
            help="the keys file (default: $VISION_API_KEYS_FILE)",
        )
        c.set_defaults(func=func)
    ls = k.add_parser("list", help="the key names in the file (never the keys)")
    ls.add_argument("--file", default=default, required=default is None)
    ls.set_defaults(func=cmd_list)


def cmd_create(a) -> int:
    from service.access import create_key

    key = create_key(a.file, a.name)
    print(key)
    print(f"# the key of {a.name!r}: shown this once, only its SHA-256 is in {a.file}.")
    print(
        "# Serve with VISION_API_KEYS_FILE set to that file; call with -H 'Authorization: "
        "Bearer <key>'"
    )
    return 0


def cmd_revoke(a) -> int:
    from service.access import revoke_key

    revoke_key(a.file, a.name)
    print(f"revoked {a.name!r} in {a.file}")
    return 0


def cmd_list(a) -> int:
    from pathlib import Path

    from service.access import parse_keys

    for name in parse_keys(Path(a.file).read_text(), a.file):
        print(name)
    return 0
