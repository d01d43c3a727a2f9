"""`make bench`: speed and memory figures, each measured side by side in one run.

Each section is a module `pipeline/bench/<name>.py` with a `main() -> None` that prints its
table. `python -m pipeline.bench [name ...]` runs all sections, or the named ones.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from pipeline.stage import setup_logging

ORDER = ["embed", "finetune", "understand", "features", "neural", "profile", "engines", "scale"]
# modules here that are not sections: `make bench-peers` (its own verb; needs .venv-peers)
NOT_SECTIONS = ["peers"]


def main(argv: list[str]) -> int:
    setup_logging()
    here = Path(__file__).parent
    modules = pkgutil.iter_modules([str(here)])
    present = {m.name for m in modules if not m.name.startswith("_")} - set(NOT_SECTIONS)
    known = [n for n in ORDER if n in present] + sorted(present - set(ORDER))
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: python -m pipeline.bench [section ...]   sections: {', '.join(known)}")
        return 0
    unknown = [a for a in argv if a not in present]
    if unknown:
        print(
            f"error: unknown bench section {unknown} (known: {', '.join(known)})", file=sys.stderr
        )
        return 2
    names = argv or known
    for name in names:
        print(f"\n=== bench: {name} ===", flush=True)
        importlib.import_module(f"pipeline.bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
