"""Roll production back to the previous version: one command.

Swaps deployment/production/ and deployment/previous/, rewrites the pointer (the running
server hot-reloads it) and marks the rolled-back version rejected, so select does not
promote it again. When that version was registered, the registry's prod stage follows:
the earlier version is assigned prod again (GTO tag), when it was registered too.

deployment/previous/ is a local folder (not a DVC output). In a fresh clone, fetch the
earlier version from the registry first:
    dvc artifacts get . classifier --version vX.Y.Z -o deployment/previous

Run: python -m deployment.release.rollback [--pointer deployment/production.json]
"""

import argparse
import sys
from pathlib import Path

from data_processing.core import cli
from deployment.release import production, registry
from deployment.server import pointer as server_pointer


def main() -> None:
    parser = argparse.ArgumentParser(prog=cli.prog(), description=__doc__.splitlines()[0])
    parser.add_argument("--pointer", type=Path, default=server_pointer.PATH)
    args = parser.parse_args()
    before = production.read(args.pointer)
    try:
        after = production.swap_back(args.pointer)
    except (ValueError, OSError) as err:
        sys.exit(f"error: rollback: {err}")
    print(
        f"rollback: {before['name']} {before['version']} -> {after['name']} "
        f"{after['version']} ({args.pointer}); {before['version']} is rejected from now on"
    )
    version = registry.versions().get(after["sha256"])
    if version is None:
        print(f"rollback: {after['version']} is not in the registry; only the local pointer moved")
        return
    registry.assign_prod(version, f"rollback from {before['name']} {before['version']}")


if __name__ == "__main__":
    main()
