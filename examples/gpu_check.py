"""GPU check: throughput and peak memory of ssad on one CUDA device, written as JSON.

Stages (random weights: speed does not depend on them; nothing is downloaded):

- ``dino_features``: DINOFeatures ViT-S/16 in bfloat16, images/s of ``transform``;
- ``transformaly_fit``: Transformaly (the paper's ViT-B/16 at 384 px, 10 student
  blocks), images/s of ``fit`` (one epoch, then the embedding and the scorer);
- ``self_distill``: SelfDistillNeg with the paper's multi-crop (2 global 224 px
  and 8 local 96 px views, rotation negatives), optimiser steps/s over ``fit``
  (the embedding of the training images included, so a lower bound);
- ``faiss``: exact kNN search on the GPU against the CPU (needs a faiss-gpu
  package; recorded as unavailable with faiss-cpu);
- ``loading``: images/s of decoding and resizing JPEG paths with 0, 1 and 2
  DataLoader workers, on the GPU machine's CPU cores (``loading`` of
  examples/scaling_benchmarks.py, beside Pillow's own 1- and 2-process ceiling);
- peak GPU memory of each stage.

``--quality`` then runs the quality benchmarks that need more than a 2-core
CPU allows, through the benchmark runner (reports in ``quality/`` beside the
JSON, or ``--quality-out``; needs Fashion-MNIST, mlxtend and the
EfficientNet-Lite0 package, see the README): Transformaly leave-one-class-out
at 128 px with 5000 training images (three classes first, then the other
seven), SSL-SDN in the paper's regime (ViT-S/16 from scratch, 10 epochs) on
Fashion-MNIST vs MNIST-5k, Transformaly one-class at 128 px, and ConvexMIL on
every class and contamination share of MNIST-5k.  Their order is their
priority: ``--quality-budget`` seconds (default 3600) stops the list between
runs.

The JSON is written after every stage and every quality run, so a check
stopped early keeps what it measured (``"complete": false`` until the end);
a stage or run that raises is recorded with its error and the next one runs
(exit status 1 at the end).
Each stage is sized to take under a minute on an H100-class GPU (on one
H200 each took under 10 s: docs/results/h200/gpu_check.json).  Without CUDA it stops at once with a
message (exit status 1); ``--smoke`` runs every stage on the CPU with a tiny
model, and a one-class kNN run on ``digits`` for ``--quality``, instead (what
the test suite does, so that this script keeps working).

On a GPU machine with no network (``nox -s gpu`` installs from the package
index), ``examples/gpu_kit.sh`` prepares here what that machine lacks and
``examples/gpu_device.sh`` runs this check there (docs: the scaling guide).

Run:  nox -s gpu    (or: python examples/gpu_check.py --out gpu-results/gpu_check.json)
"""

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import traceback

import faiss
import numpy as np
import torch

import ssad
from ssad import DINOFeatures, KNNScorer, SelfDistillNegDetector, TransformalyDetector


def images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


class Stage:
    """Time a block and read the peak GPU memory it reached."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_gib = torch.cuda.max_memory_allocated() / 2**30
        else:
            self.peak_gib = None
        self.seconds = time.perf_counter() - self.start
        return False


def dino_features(cfg, device):
    feats = DINOFeatures(
        cfg["vit_small"],
        pretrained=False,
        image_size=cfg["size"],
        batch_size=cfg["batch"],
        device=device,
        precision=cfg["precision"],
        random_state=0,
    )
    X = images(cfg["n_dino"], cfg["size"])
    feats.fit(X[:1]).transform(X[: cfg["batch"]])  # warm-up: kernels, allocator
    with Stage(device) as stage:
        Z = feats.transform(X)
    return {
        "backbone": cfg["vit_small"],
        "precision": cfg["precision"],
        "batch_size": cfg["batch"],
        "n_images": len(X),
        "seconds": stage.seconds,
        "images_per_s": len(X) / stage.seconds,
        "n_features": int(Z.shape[1]),
        "peak_memory_gib": stage.peak_gib,
    }


def transformaly_fit(cfg, device):
    X = images(cfg["n_transformaly"], 32)
    det = TransformalyDetector(
        cfg["vit_base"],
        pretrained=False,
        n_student_blocks=cfg["student_blocks"],
        n_epochs=1,
        validation_fraction=None,
        image_size=cfg["transformaly_size"],
        device=device,
        precision=cfg["precision"],
        random_state=0,
    )
    with Stage(device) as stage:
        det.fit(X)
    return {
        "backbone": cfg["vit_base"],
        "image_size": cfg["transformaly_size"],
        "n_images": len(X),
        "n_epochs": 1,
        "seconds": stage.seconds,
        "images_per_s": len(X) / stage.seconds,
        "peak_memory_gib": stage.peak_gib,
    }


def self_distill(cfg, device):
    X = images(cfg["n_self_distill"], 32)
    det = SelfDistillNegDetector(
        cfg["vit_small"],
        image_size=cfg["size"],
        n_local_crops=8,  # the paper's multi-crop: 2 global + 8 local views
        batch_size=cfg["sd_batch"],
        n_epochs=1,
        warmup_epochs=0,
        out_dim=cfg["out_dim"],
        device=device,
        precision=cfg["precision"],
        random_state=0,
    )
    with Stage(device) as stage:
        det.fit(X)
    return {
        "backbone": cfg["vit_small"],
        "global_crop_size": list(det.global_crop_size_),
        "local_crop_size": list(det.local_crop_size_),
        "n_local_crops": 8,
        "batch_size": cfg["sd_batch"],
        "n_steps": det.n_steps_,
        "seconds": stage.seconds,
        "steps_per_s_lower_bound": det.n_steps_ / stage.seconds,
        "peak_memory_gib": stage.peak_gib,
    }


def faiss_search(cfg, device):
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0:
        return {"available": False, "reason": "the installed faiss has no GPU support"}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(cfg["faiss_n"], 384)).astype(np.float32)
    Q = rng.normal(size=(cfg["faiss_queries"], 384)).astype(np.float32)
    out = {"available": True, "n_train": len(X), "n_queries": len(Q)}
    for where in ("cpu", "cuda"):
        scorer = KNNScorer(index="flat", device=where)
        with Stage(device) as fit:
            scorer.fit(X)
        with Stage(device) as score:
            scorer.score_samples(Q)
        out[where] = {"fit_s": fit.seconds, "score_s": score.seconds}
    out["score_speedup"] = out["cpu"]["score_s"] / out["cuda"]["score_s"]
    return out


def path_loading(cfg, device):
    """Decoding of JPEG paths in DataLoader workers on this machine's CPUs (no GPU)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from scaling_benchmarks import run_loading

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread per process beside the workers, as the script does
    try:
        result = run_loading(argparse.Namespace(n_images=cfg["n_loading"], jpeg_size=256))
    finally:
        torch.set_num_threads(threads)
    return {"cores": os.cpu_count(), **result}


STAGES = [
    ("dino_features", dino_features),
    ("transformaly_fit", transformaly_fit),
    ("self_distill", self_distill),
    ("faiss", faiss_search),
    ("loading", path_loading),
]

FULL = {
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_384",
    "size": 224,
    "transformaly_size": 384,
    "student_blocks": 10,
    "batch": 256,
    "sd_batch": 64,
    "out_dim": 4096,
    "precision": "bfloat16",
    "n_dino": 16384,
    "n_transformaly": 2048,
    "n_self_distill": 1280,
    "faiss_n": 200_000,
    "faiss_queries": 10_000,
    "n_loading": 2048,
}
SMOKE = {
    "vit_small": "test_vit",
    "vit_base": "test_vit",
    "size": 32,
    "transformaly_size": 32,
    "student_blocks": 1,
    "batch": 8,
    "sd_batch": 4,
    "out_dim": 16,
    "precision": "float32",
    "n_dino": 16,
    "n_transformaly": 8,
    "n_self_distill": 8,
    "faiss_n": 500,
    "faiss_queries": 50,
    "n_loading": 8,
}


#: The quality runs of --quality, in order of priority (benchmark runner arguments).
QUALITY = [
    # Transformaly leave-one-class-out with five times the images of the CPU runs (1000 at
    # 64 and 96 px, docs transformaly), at 128 px; three classes first, so that a short
    # lease still brings a report back (the runner writes it at the end)
    [
        "--preset", "transformaly-leave-one-out", "--image-size", "128",
        "--max-train", "5000", "--classes", "0", "1", "2",
    ],
    # the paper's regime: ViT-S/16 from scratch (64 px on a CPU does not gain: docs
    # self_distill); 30 epochs did not finish in the 6 minutes of one H200 (docs scaling)
    (
        "--estimator self-distill --protocol dataset-vs-dataset --dataset fashion-mnist "
        "--ood-dataset mnist-5k --max-train 5000 --max-test 2000 --n-epochs 10"
    ).split(),
    [
        "--preset", "transformaly-leave-one-out", "--image-size", "128",
        "--max-train", "5000", "--classes", "3", "4", "5", "6", "7", "8", "9",
    ],
    ["--preset", "transformaly-one-class", "--image-size", "128"],
    ["--preset", "convex-mil-mnist-5k"],  # 326 s on one H200: docs/results/h200
]  # fmt: skip


SKIPPED = "skipped: budget spent"

#: What --smoke runs instead: the path through the runner, in seconds on a CPU.
QUALITY_SMOKE = [["--dataset", "digits", "--estimator", "knn-pixels", "--classes", "0"]]


def quality_runs(out_dir, budget_s, runs=QUALITY, done=None, on_run=None):
    """Run each benchmark of ``runs`` (while the budget lasts); their status and time.

    Each run's entry is appended to ``done`` (a new list by default) with the
    status ``"running"`` before it starts and completed when it ends;
    ``on_run()`` is called at both moments (the script writes its JSON), so
    a run killed from outside is on record as such.
    """
    from ssad.benchmarks.__main__ import main as benchmark

    done = [] if done is None else done
    start = time.perf_counter()
    for i, argv in enumerate(runs):
        if i and time.perf_counter() - start > budget_s:  # the first always runs
            done.append({"argv": argv, "status": SKIPPED})
            continue
        entry = {"argv": argv, "status": "running"}
        done.append(entry)
        if on_run is not None:
            on_run()
        t = time.perf_counter()
        try:
            status = benchmark([*argv, "--out", out_dir, "--overwrite", "--quiet"])
        except SystemExit as exc:  # the runner's own error exits (missing data, bad report)
            status = f"error: exit {exc.code}"
        except Exception as exc:  # the next run may still work
            traceback.print_exc()
            status = f"error: {type(exc).__name__}: {exc}"
        entry.update(status=status, seconds=time.perf_counter() - t)
        print("quality", json.dumps(entry), flush=True)
        if on_run is not None:
            on_run()
    return done


def write_json(report, path):
    """Write ``report`` to ``path`` through a temporary file (a kill never leaves half a file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-results/gpu_check.json")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models on the CPU (checks the script only)"
    )
    parser.add_argument("--quality", action="store_true", help="then the quality benchmarks")
    parser.add_argument("--quality-budget", type=float, default=3600.0, help="seconds")
    parser.add_argument(
        "--quality-out", help="folder of the quality reports (default: quality/ beside --out)"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        cfg, device = SMOKE, torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            sys.exit(
                "gpu_check needs a CUDA device, but torch.cuda.is_available() is False on this "
                f"machine (torch {torch.__version__}, built for CUDA {torch.version.cuda}). "
                "Run it on a GPU machine, or pass --smoke to check the script on the CPU."
            )
        cfg, device = FULL, torch.device("cuda")
    report = {
        "ssad": ssad.__version__,
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "machine": platform.node(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "smoke": args.smoke,
        "complete": False,
        "stages": {},
    }
    start = time.perf_counter()

    def save():  # after every stage and quality run: a run cut short keeps what it measured
        report["total_seconds"] = time.perf_counter() - start
        write_json(report, args.out)

    for name, stage in STAGES:
        try:
            result = stage(cfg, device)
        except Exception as exc:  # a lease is one shot: a failed stage must not cost the rest
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
        if device.type == "cuda":
            with contextlib.suppress(Exception):  # after a sticky CUDA error this raises too
                torch.cuda.empty_cache()
        report["stages"][name] = result
        print(name, json.dumps(result), flush=True)
        save()
    if args.quality:
        out_dir = args.quality_out or os.path.join(
            os.path.dirname(os.path.abspath(args.out)), "quality"
        )
        report["quality"] = []
        runs = QUALITY_SMOKE if args.smoke else QUALITY
        quality_runs(out_dir, args.quality_budget, runs, done=report["quality"], on_run=save)
    report["complete"] = True
    failed_runs = [r for r in report.get("quality", []) if r["status"] not in (0, SKIPPED)]
    report["n_errors"] = len(failed_runs) + sum("error" in r for r in report["stages"].values())
    save()
    print(f"wrote {args.out} ({report['total_seconds']:.0f} s, {report['n_errors']} errors)")
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["n_errors"] else 0)
