"""``examples/fabric_loop.py`` end to end, as a user would launch it (a fresh process, `fresh_python`), then its CSV
log.

The run uses the random-weight Inception of the session (scores are not comparable, the pipeline is the same) and
tiny counts: 2 epochs on 128 digits, 8 samples per evaluation, 16 real images.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
from fresh_python import script_env

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fabric_loop.py"

pytestmark = pytest.mark.slow
pytest.importorskip("sklearn")


def test_fabric_loop_trains_and_logs_every_metric(
    tmp_path: Path, inception_weights_path: Path, fresh_python: Any
) -> None:
    # TORCH_HOME: the real-data cache goes to this test's folder. One thread: see test_example.py.
    env = script_env(TORCH_HOME=str(tmp_path / "torch"), OMP_NUM_THREADS="1")
    args = ["--inception-weights", str(inception_weights_path), "--epochs", "2", "--train-size", "128"]
    args += ["--num-samples", "8", "--num-real", "16", "--eval-batch-size", "8", "--splits", "2"]
    args += ["--kid-subset-size", "4", "--kid-subsets", "3", "--logdir", str(tmp_path / "logs")]
    (result,) = fresh_python.run([[EXAMPLE, *args]], timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("epoch")] == [
        "epoch 0",
        "epoch 1",
    ]

    (metrics,) = (tmp_path / "logs" / "fabric_gan").glob("version_*/metrics.csv")
    with open(metrics) as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [0, 1]
    for key in ("fid", "is", "is_std", "kid", "kid_std", "precision", "recall", "density", "coverage", "g_loss"):
        assert all(math.isfinite(float(row[key])) for row in rows), key
    assert {float(row["fid_num_samples"]) for row in rows} == {8.0}
    assert {float(row["clamped"]) for row in rows} == {0.0}  # tanh output in the declared space (-1, 1)
    # One real pass, cached: the FID moments and the per-sample features shared by KID and precision/recall.
    cached = sorted(p.name.split(".", 1)[1] for p in (tmp_path / "torch" / "lightning_ganeval").rglob("real-*"))
    assert cached == ["features.npz", "npz"]
