"""Roll one dataset's production back to its previous version: one command.

Swaps deployment/<dataset>/production/ and previous/, rewrites that dataset's pointer (the
running server hot-reloads that model only) and marks the rolled-back version rejected, so
select does not promote it again. Other datasets' models are not touched. When that version
was registered, the registry's prod stage follows: the earlier version is assigned prod again
(GTO tag), when it was registered too.

previous/ is a local folder (not a DVC output). In a fresh clone, fetch the earlier version
from the registry first:
    dvc artifacts get . digits-classifier --version vX.Y.Z -o deployment/digits/previous

Run: reprovision rollback digits
"""

import sys

from data_processing.core import cli
from deployment.release import production, registry
from deployment.server import pointer as server_pointer


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("dataset", help="the dataset whose production model goes back")
    args = parser.parse_args()
    pointer = server_pointer.of(args.dataset)
    before = production.read(pointer)
    if before is None:
        known = ", ".join(p.parent.name for p in server_pointer.every()) or "none"
        sys.exit(
            f"error: rollback: {pointer}: {args.dataset} has no production model (in "
            f"production: {known})"
        )
    try:
        after = production.swap_back(pointer, registry.artifact(args.dataset))
    except (ValueError, OSError) as err:
        sys.exit(f"error: rollback: {err}")
    print(
        f"rollback: {before['name']} {before['version']} -> {after['name']} "
        f"{after['version']} ({pointer}); {before['version']} is rejected from now on"
    )
    name = registry.artifact(args.dataset)
    version = registry.versions(name).get(after["sha256"])
    if version is None:
        print(f"rollback: {after['version']} is not in the registry; only the local pointer moved")
        return
    registry.assign_prod(name, version, f"rollback from {before['name']} {before['version']}")


if __name__ == "__main__":
    main()
