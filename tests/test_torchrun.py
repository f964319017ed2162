"""Scale-out under torchrun: each process takes its shard from RANK/WORLD_SIZE, the last one merges,
and the merged table equals the single-process table (and a second process gives the same numbers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tkmia.cli import main

pytestmark = pytest.mark.slow

ARGS = ["attack", "--profile", "tiny", "--k", "2", "--n-samples", "8", "--batch-size", "2", "--max-iter", "5",
        "--no-progress"]


def table(root: Path) -> pd.DataFrame:
    (path,) = root.glob("tiny/*/records.parquet")
    return pd.read_parquet(path).drop(columns=["seconds"])


def test_torchrun_splits_a_run_and_merges_to_the_single_process_table(tiny_home, tmp_path, capsys):
    assert main([*ARGS, "--results", str(tmp_path / "single")]) == 0  # trains the tiny victim if needed
    capsys.readouterr()
    env = {**os.environ, "TKMIA_HOME": str(tiny_home)}
    bin_dir = Path(sys.executable).parent
    other = subprocess.run([sys.executable, "-m", "tkmia", *ARGS, "--results", str(tmp_path / "other")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert other.returncode == 0, other.stderr
    launched = subprocess.run(
        [str(bin_dir / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "tkmia", *ARGS,
         "--results", str(tmp_path / "torchrun")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    single = table(tmp_path / "single")
    pd.testing.assert_frame_equal(table(tmp_path / "other"), single)  # the same seed, another process
    pd.testing.assert_frame_equal(table(tmp_path / "torchrun"), single)
    out = launched.stdout
    assert "shard 0/2 done" in out and "shard 1/2 done" in out  # each process ran its half
    assert out.count("partial: 2 of 4 batches; waiting for shards") <= 1
    for line in out.splitlines():  # every records path printed exists
        if line.startswith("records: "):
            assert Path(line.removeprefix("records: ")).exists()
    assert "records: " in out
