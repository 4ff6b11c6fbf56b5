"""A journal's compactor process: ``python -m banditroute.logs.compactor LOG_DIR``.

Started by :class:`banditroute.logs.journal.Journal` with ``compactor="process"``; reads
``writer<TAB>segment<TAB>path`` lines on stdin, writes each segment's Parquet parts and
answers ``ok`` on stdout; exits when stdin closes. (Its own module, not imported by the
package, so ``-m`` runs it without a second copy of an imported module.)
"""

import sys
from pathlib import Path

from banditroute.logs.journal import serve_compactions
from banditroute.logs.parts import compact_segment


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m banditroute.logs.compactor LOG_DIR", file=sys.stderr)
        return 2
    log_dir = Path(argv[0])
    serve_compactions(str(log_dir), lambda writer, number, path: compact_segment(log_dir, writer, number, path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
