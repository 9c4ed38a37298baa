"""``python -m detector.ablation``: see :mod:`detector.ablation.cli`."""

import sys

from .cli import main
from .runner import RunFailed

if __name__ == "__main__":
    try:
        main()
    except (ValueError, RunFailed) as e:  # user errors and failed runs: the message, no traceback
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: rerun the same command to resume")
