"""Data-parallel training under torch.distributed: two CPU processes (gloo) against one.

The two processes are started as ``torchrun`` starts them: each gets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` and fits the
detectors, which join the process group themselves.  They are forked from the
test process (torch is already imported), so the test takes seconds.
"""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssad import SelfDistillNegDetector, TransformalyDetector
from ssad.nn import DINOLoss

# dropout 0: the loss is then a deterministic mean over images, so two processes with
# half a batch each must follow one process with the whole batch
TRANSFORMALY = {
    "backbone": "test_vit",
    "pretrained": False,
    "image_size": 32,
    "n_student_blocks": 2,
    "dropout": 0.0,
    "n_epochs": 3,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "validation_fraction": 0.25,
    "device": "cpu",
    "random_state": 0,
}
SELF_DISTILL = {
    "backbone": "test_vit",
    "image_size": 32,
    "out_dim": 32,
    "hidden_dim": 32,
    "bottleneck_dim": 16,
    "n_local_crops": 2,
    "n_epochs": 2,
    "batch_size": 8,
    "device": "cpu",
    "random_state": 0,
}

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed"
)


def _images():
    return np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)


def _fit_and_describe() -> dict:
    X = _images()
    transformaly = TransformalyDetector(**TRANSFORMALY).fit(X)
    self_distill = SelfDistillNegDetector(**SELF_DISTILL).fit(X)
    centre = DINOLoss(4)
    rank = dist.get_rank() if dist.is_initialized() else 0
    centre.update_center(torch.full((2, 4), float(rank)))  # the mean over ranks moves it
    return {
        "transformaly_world": transformaly.world_size_,
        "transformaly_curve": transformaly.loss_curve_,
        "transformaly_validation": transformaly.validation_curve_,
        "transformaly_scores": transformaly.score_samples(X[:4]).tolist(),
        "self_distill_world": self_distill.world_size_,
        "self_distill_curve": self_distill.loss_curve_,
        "self_distill_entropy": self_distill.teacher_entropy_curve_,
        "teacher": [float(p.double().sum()) for p in self_distill.teacher_.parameters()],
        "self_distill_scores": self_distill.score_samples(X[:4]).tolist(),
        "centre": centre.center.tolist(),
    }


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        result = _fit_and_describe()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(
        _worker, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="fork"
    )
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_every_rank_ends_with_the_same_fitted_detector(two_processes):
    rank0, rank1 = two_processes
    assert rank0["transformaly_world"] == rank1["self_distill_world"] == 2
    # the epoch losses are summed over processes: one curve for all ranks
    assert rank0["transformaly_curve"] == rank1["transformaly_curve"]
    assert rank0["transformaly_validation"] == rank1["transformaly_validation"]
    assert rank0["self_distill_curve"] == rank1["self_distill_curve"]
    assert rank0["self_distill_entropy"] == rank1["self_distill_entropy"]
    # the EMA teacher follows identical students
    np.testing.assert_allclose(rank0["teacher"], rank1["teacher"], rtol=1e-6)
    np.testing.assert_allclose(rank0["transformaly_scores"], rank1["transformaly_scores"])
    np.testing.assert_allclose(rank0["self_distill_scores"], rank1["self_distill_scores"])


def test_dino_centre_moves_towards_the_mean_over_ranks(two_processes):
    # ranks 0 and 1 see teacher outputs 0 and 1: the batch centre is 0.5
    for result in two_processes:
        np.testing.assert_allclose(result["centre"], np.full((1, 4), 0.1 * 0.5))


def test_two_processes_follow_one_process_with_the_same_global_batch(two_processes):
    one = _fit_and_describe()
    assert one["transformaly_world"] == one["self_distill_world"] == 1
    rank0 = two_processes[0]
    np.testing.assert_allclose(rank0["transformaly_curve"], one["transformaly_curve"], rtol=1e-4)
    np.testing.assert_allclose(
        rank0["transformaly_validation"], one["transformaly_validation"], rtol=1e-4
    )
    np.testing.assert_allclose(rank0["transformaly_scores"], one["transformaly_scores"], rtol=1e-4)
    # self-distillation draws random views, per process: same scale, not the same numbers
    assert len(rank0["self_distill_curve"]) == len(one["self_distill_curve"])
    assert np.all(np.isfinite(rank0["self_distill_curve"]))
