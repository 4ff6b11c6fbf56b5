"""``python -m ope``: see :mod:`ope.cli`."""

import os
import sys

from ope.cli import main


def run() -> int:
    """:func:`ope.cli.main`, ending quietly with 141 when the reader closes stdout (``| head``)."""
    try:
        code = main()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail again
        return 141


if __name__ == "__main__":
    sys.exit(run())
