"""Cost benchmarks: ssad against the plain code it wraps, measured in one run.

``python -m ssad.benchmarks.speed`` prints and saves (JSON) two comparisons:

1. images/s of :class:`ssad.DINOFeatures` ``.transform`` against a plain timm
   forward loop over the same tensors (same model, batch size, precision);
2. scoring time of :class:`ssad.KNNScorer` (faiss) against
   ``sklearn.neighbors.NearestNeighbors(algorithm="brute")`` at
   ``n_train=20000, d=384``.

Timings on shared machines are noisy: read the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssad import DINOFeatures, KNNScorer
from ssad.backbones import forward_features
from ssad.benchmarks._env import environment

logger = logging.getLogger(__name__)


def _best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_features(
    backbone: str, n_images: int, batch_size: int, device: str, repeat: int
) -> dict[str, Any]:
    """images/s of DINOFeatures.transform vs a plain timm loop on the same tensors."""
    feats = DINOFeatures(backbone, pretrained=False, batch_size=batch_size, device=device)
    size = 224
    X = torch.rand(n_images, 3, size, size, generator=torch.Generator().manual_seed(0))
    feats.fit(X[:1])
    model, pre = feats.model_, feats.preprocessor_
    dev = feats.device_
    mean = torch.tensor(pre.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, device=dev).view(1, -1, 1, 1)
    dtype = torch.bfloat16 if dev.type == "cuda" else None

    def plain() -> None:
        with torch.inference_mode():
            out = []
            for i in range(0, n_images, batch_size):
                x = (X[i : i + batch_size].to(dev) - mean) / std
                with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                    out.append(forward_features(model, x)[:, 0].float().cpu())
            torch.cat(out).numpy()

    def ours() -> None:
        feats.transform(X)

    plain()  # warm-up
    ours()
    t_plain, t_ours = _best_of(plain, repeat), _best_of(ours, repeat)
    return {
        "backbone": backbone,
        "n_images": n_images,
        "batch_size": batch_size,
        "device": str(dev),
        "plain_images_per_s": n_images / t_plain,
        "ssad_images_per_s": n_images / t_ours,
        "ssad_over_plain": t_plain / t_ours,
    }


def bench_knn(n_train: int, n_test: int, dim: int, repeat: int) -> dict[str, Any]:
    """KNNScorer (faiss, exact) vs sklearn brute-force NearestNeighbors, k=2."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    X_train = rng.standard_normal((n_train, dim)).astype(np.float32)
    X_test = rng.standard_normal((n_test, dim)).astype(np.float32)
    scorer = KNNScorer(n_neighbors=2).fit(X_train[:10])  # warm-up imports
    scorer = KNNScorer(n_neighbors=2).fit(X_train)
    nn = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(X_train)
    t_faiss = _best_of(lambda: scorer.score_samples(X_test), repeat)
    t_sklearn = _best_of(lambda: nn.kneighbors(X_test), repeat)
    ours = scorer.score_samples(X_test)
    ref = -nn.kneighbors(X_test)[0].sum(axis=1)
    return {
        "n_train": n_train,
        "n_test": n_test,
        "dim": dim,
        "faiss_seconds": t_faiss,
        "sklearn_brute_seconds": t_sklearn,
        "speedup": t_sklearn / t_faiss,
        "max_abs_score_difference": float(np.max(np.abs(ours - ref))),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the results it saved."""
    parser = argparse.ArgumentParser(
        prog="python -m ssad.benchmarks.speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", default="vit_small_patch16_224")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logger.setLevel(logging.INFO)

    results = {
        "features": bench_features(
            args.backbone, args.n_images, args.batch_size, args.device, args.repeat
        ),
        "knn": bench_knn(args.n_train, args.n_test, args.dim, args.repeat),
        "environment": environment(),
    }
    f, k = results["features"], results["knn"]
    logger.info(
        f"DINOFeatures.transform ({f['backbone']}, {f['n_images']} images, {f['device']}): "
        f"{f['ssad_images_per_s']:.1f} img/s; plain timm loop: {f['plain_images_per_s']:.1f} "
        f"img/s; ssad/plain = {f['ssad_over_plain']:.3f}"
    )
    logger.info(
        f"KNNScorer faiss (n_train={k['n_train']}, d={k['dim']}, n_test={k['n_test']}): "
        f"{k['faiss_seconds']:.3f} s; sklearn brute: {k['sklearn_brute_seconds']:.3f} s; "
        f"speed-up {k['speedup']:.2f}x; max |score diff| {k['max_abs_score_difference']:.2e}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "speed.json"
    path.write_text(json.dumps(results, indent=2))
    logger.info("wrote %s", path)
    return results


if __name__ == "__main__":
    main()
