"""One night's run of the real CLI, at the night's time: `python -m soak.night WHEN restic-orch-args...`.

The CLI has no way to be told the time (restic's --time, the pipeline's `when`): this entry point runs the very
same click command line with `pipeline.run_backup` given `when`, so config loading, the run log, the --json
summary and the exit code are the CLI's own. A killable child process, like cron's. Once `backup` takes the time
itself (a hidden `--at`, proposed in commands/backup.py), the soak can run `restic_orch.cli` directly.
"""

from __future__ import annotations

import functools
import sys
from datetime import datetime

from restic_orch import cli, pipeline


def main(argv: list[str]) -> None:
    when = datetime.fromisoformat(argv[0])
    pipeline.run_backup = functools.partial(pipeline.run_backup, when=when)  # type: ignore[assignment]
    cli.main(args=argv[1:], prog_name="restic-orch")


if __name__ == "__main__":
    main(sys.argv[1:])
