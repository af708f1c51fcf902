"""How every benchmark reports: one JSON line on stdout, and the same, indented, in bench/results/.

Scripts run as `python bench/NAME.py` from the repository root; each puts the root first on
`sys.path` (so `bench/` cannot shadow the project's packages) and imports this as `bench.publish`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = RESULTS_DIR.parents[1]


def provenance() -> dict[str, object]:
    """What a reader needs to weigh the figures: code, machine, load, versions."""
    import torch

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=False).stdout.strip()
    return {"commit": commit, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__}


def publish(name: str, result: dict[str, Any]) -> Path:
    """Write `result` to bench/results/NAME.json and print it; return the file's path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return path
