"""The pipeline, as `make run` runs it: `dvc repro`, quietly, then the leaderboard.

`--quiet` leaves one line per stage and cell (each stage prints its own; Keras' epochs go to
models/runs/<cell>/logs/). `--keep-going`: a dataset whose cells all fail the gate stops only
its own stages, and the other datasets still promote. The leaderboard prints either way, and
the exit status is dvc's.

Run: reprovision run [TARGET ...]   (dvc repro's targets: a stage, or stage@cell)
"""

import subprocess
import sys

from data_processing.core import cli
from models import leaderboard


def main(argv: list[str] | None = None) -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("targets", nargs="*", help="dvc repro targets (default: every stage)")
    parser.add_argument(
        "--force", action="store_true", help="rerun the targets even when nothing changed"
    )
    args = parser.parse_args(argv)
    command = ["dvc", "repro", "--quiet", "--keep-going", *(["--force"] if args.force else [])]
    code = subprocess.run([*command, *args.targets]).returncode
    if code:
        print(f"reprovision run: `{' '.join(command)}` exited {code}", file=sys.stderr)
    print()
    leaderboard.main([])
    sys.exit(code)


if __name__ == "__main__":
    main()
