"""How every benchmark reports: one JSON line on stdout, and the same, indented, in bench/results/.

Scripts run as `python bench/NAME.py` from the repository root; each puts the root first on
`sys.path` (so `bench/` cannot shadow the project's packages) and imports this as `bench.publish`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def publish(name: str, result: dict[str, Any]) -> Path:
    """Write `result` to bench/results/NAME.json and print it; return the file's path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return path
