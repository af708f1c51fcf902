"""A training run killed while dvclive or the job wrote their files: what the next run and
the manager read back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from train.live import Metrics
from train.manage import Job

HEADER = "step\tG\n"  # dvclive's columns, rows ending in a newline


def _killed_run_folder(folder: Path) -> Path:
    """A live folder as a run killed during dvclive's writes at step 5 leaves it."""
    tsv = folder / "plots" / "metrics" / "G.tsv"
    tsv.parent.mkdir(parents=True)
    rows = "".join(f"{s}\t0.{s}\n" for s in range(6))
    tsv.write_text(HEADER + rows + "6\t0.")  # the row being appended when killed
    headless = folder / "plots" / "metrics" / "D.tsv"
    headless.write_text("st")  # killed while dvclive wrote the header
    (folder / "metrics.json").write_text('{"step": 5, "G": 0.')
    (folder / "params.yaml").write_text("lineage:\n  dataset: [a, ")
    return tsv


def test_a_run_killed_mid_write_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "live"
    tsv = _killed_run_folder(folder)
    metrics = Metrics(folder, enabled=True, resume_step=4)  # dvclive raised here before
    assert tsv.read_text() == HEADER + "".join(f"{s}\t0.{s}\n" for s in range(4))
    assert not (folder / "params.yaml").exists()
    assert not (folder / "plots" / "metrics" / "D.tsv").exists()
    metrics.log({"G": 0.25}, step=4)
    metrics.close()
    assert json.loads((folder / "metrics.json").read_text())["step"] == 4
    steps = [line.split("\t")[0] for line in tsv.read_text().splitlines()[1:]]
    assert steps == ["0", "1", "2", "3", "4"]


def test_the_managers_reason_is_the_error_not_shutdown_noise(tmp_path: Path) -> None:
    """dulwich's __del__ fails while Python shuts down after the real traceback; the job's
    reason must name the real error."""
    script = (
        "class Noisy:\n"
        "    def __del__(self):\n"
        "        raise ImportError('sys.meta_path is None, Python is likely shutting down')\n"
        "keep = [Noisy(), Noisy()]\n"
        "import json\n"
        "json.loads('{\"step\": 5, \"G\": 0.')\n")
    job = Job([sys.executable, "-c", script], str(tmp_path), tmp_path / "manager.log")
    code = job.proc.wait()
    log = (tmp_path / "manager.log").read_text()
    assert "Exception ignored in" in log and "sys.meta_path" in log  # the noise is there
    reason = job.reason(code)
    assert reason.startswith("exit 1: json.decoder.JSONDecodeError: "), reason
