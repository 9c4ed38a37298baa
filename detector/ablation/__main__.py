"""``python -m detector.ablation``: see :mod:`detector.ablation.cli`."""

import sys
import warnings

from .cli import main
from .launchers import UsageError
from .runner import RunFailed
from .runs import RunFileWarning

_show = warnings.showwarning


def _show_run_file_warning(message, category, filename, lineno, file=None, line=None):
    """A broken run file is the user's business, not the code's: ``warning: PATH: why; what now``."""
    if issubclass(category, RunFileWarning):
        print(f"warning: {message}", file=file or sys.stderr)
    else:
        _show(message, category, filename, lineno, file, line)


if __name__ == "__main__":
    warnings.showwarning = _show_run_file_warning
    try:
        main()
    except UsageError as e:  # a launcher flag that cannot work here: command-line input, exit code 2
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, RunFailed) as e:  # user errors and failed runs: the message, no traceback
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted: rerun the same command to resume")
