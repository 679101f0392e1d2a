"""The benchmark runs end to end and writes its table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_epoch.py"


def test_quick_benchmark_writes_the_comparison_table(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCH), "--quick", "--circuits", "mlp", "--epochs", "1",
               "--results-dir", str(tmp_path)]  # fmt: skip

    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)

    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(tmp_path / "latest.csv")
    assert table["circuit"].tolist() == ["mlp"]
    for column in ("product_s", "bare_s", "common_s", "product_over_bare", "floor_s"):
        assert table[column].iloc[0] > 0, column
    # five steps per epoch under --quick; the CSV rounds seconds to 4 decimals, 0.02 ms a step
    row = table.iloc[0]
    per_step_ms = (row["product_s"] - row["bare_s"]) / 5 * 1e3
    assert row["overhead_ms_per_step"] == pytest.approx(per_step_ms, abs=0.03)
