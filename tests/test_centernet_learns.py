"""Proof that CenterNet training learns: centernet-res18 from scratch on the built-in sample dataset, CPU.

96 px input, 80 iterations of batch 16, one thread: about a minute. Chance level for this split is mAP@0.5 ~ 0.005
(see test_train_learns.py). Measured on the development machine (deterministic for the seed): validation mAP@0.5
0.188 and a loss falling from 3.78 to 2.18 in float32; 0.195 and 3.79 -> 2.14 with the recipe's bf16 autocast and
channels-last (the default on a CPU with AMX, 34 s). The test asserts mAP > 0.08 (16x chance, with room for other CPUs'
float differences) and a loss falling by more than a third.
"""

from __future__ import annotations

import pytest

from ssdcli.data.prepare import prepare_voc
from ssdcli.data.samples import SAMPLE_CLASSES, write_sample_dataset
from ssdcli.engine.trainer import TrainOptions, train


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_centernet_learns_the_sample_dataset(tmp_path):
    write_sample_dataset(tmp_path / "voc", num_train=300, num_test=60, seed=0)
    prepare_voc(tmp_path / "voc", tmp_path / "prepared", classes=list(SAMPLE_CLASSES))
    iters = 80
    options = TrainOptions(
        data=str(tmp_path / "prepared"), arch="centernet-res18", img_size=96, iters=iters, batch=16,
        optimizer="adamw", lr=2e-3, schedule="cosine", warmup_iters=10, workers=1, eval_every=iters,
        project=str(tmp_path / "runs"), name="learn", device="cpu", log_every=10, seed=0, val_metric="voc07",
    )
    result = train(options, report=lambda m: None)
    losses = [r["loss_total"] for r in result.history if r["type"] == "train"]
    assert losses[-1] < losses[0] * (2 / 3), losses
    assert result.best_map is not None
    assert result.best_map > 0.08, result.best_map
