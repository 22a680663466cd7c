"""How much of what contamination costs ConvexMIL goes through eq. 11's reference set.

Eq. 11 scores a test image by its nearest training image, so a test anomaly
like one of the contaminating anomalies scores as normal whatever the
encoder learned.  This script fits the pretrained variant's loss terms (as
``examples/convex_mil_terms.py``) on the runner's contaminated splits and
scores each fit three ways, with the same encoder (``--terms`` picks among
``full``, ``rot-conv``, ``rot-mean`` and ``rotation-only``; by default all
but ``rot-mean``):

- ``own``: against the memory the detector keeps (its ``memory_filter``),
  the detector's own scores;
- ``all``: against every training image;
- ``clean``: against the training images that are not contaminating
  anomalies.  This reads the contamination labels, which no detector may:
  it is a diagnostic of where a loss term costs, not a method.

It also prints how many contaminating images the memory filter kept and how
well its training scores rank them (AUROC, contaminating images positive),
and writes how many training images eqs. 1-3 placed in an abnormal
candidate set in the last epoch and how many of those are contaminating
images.  If a term loses to another with the detector's own memory but not
against the clean one, its cost goes through the memory (the anomalies it
learned to embed close to the test anomalies), not through what it does to
the normal images.

``--rotation-filter`` adds a fourth memory for the terms with a rotation
head: the training images whose four rotations the head predicts best
(mean log-likelihood of the true rotation), as many dropped as the
detector's own filter drops.  It asks whether the rotation head, which
``L_mean`` does not train, tells the contaminating images apart better than
eq. 2 on the embeddings.  ``--frozen-filter`` adds another: eq. 2 (the
detector's own memory filter) on the untrained backbone's L2-normalised
features (``knn-frozen-unit``), which the training has not drawn together,
again dropping as many images.

``--score-neighbors K [K ...]`` also scores each fit against the memories
``own``, ``all`` and ``clean`` with the sum of the cosine similarities to
the K nearest memory images instead of the nearest one (eq. 11 is K = 1; the
``-unit`` baselines' kNN uses K = 2): a few contaminating images the filter
keeps stand in for their test class only if K of them are there.  The rows
get ``own_k{K}``, ``all_k{K}`` and ``clean_k{K}``.

Run:  python examples/convex_mil_memory.py --dataset fashion-mnist --ratio 0.1 \\
          --max-train 300 --classes 2 6 8 --seed 0
"""

import argparse
import json
import sys

import numpy as np
import torch
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from ssad.benchmarks import make_estimator, run_benchmark
from ssad.features import backbone_features
from ssad.scoring import KNNScorer

PRESET_96 = (
    '{"memory_filter": "pseudo_normality", "image_size": 96, "mean_shift_negatives": "rotations"}'
)
TERMS = {
    "full": {},
    "rot-conv": {"lambda_mean": 0.0},
    "rot-mean": {"use_convex": False},
    "rotation-only": {"use_convex": False, "lambda_mean": 0.0},
}


def eq11_auroc(
    Z_memory: np.ndarray, Z_test: np.ndarray, is_anomaly: np.ndarray, k: int = 1
) -> float:
    """AUROC of eq. 11 (cosine similarity to the nearest memory image), anomalies positive.

    With ``k`` > 1 the similarities to the ``k`` nearest memory images are summed.
    """
    scores = KNNScorer(metric="cosine", n_neighbors=k).fit(Z_memory).score_samples(Z_test)
    return float(roc_auc_score(is_anomaly, -scores))


@torch.inference_mode()
def rotation_likelihood(det: object, X: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Per image: the fitted rotation head's mean log-likelihood of the true rotation."""
    scores = []
    for start in range(0, len(X), batch_size):
        x = torch.from_numpy(np.asarray(X[start : start + batch_size], dtype=np.float32) / 255)
        x = x[:, None].expand(-1, 3, -1, -1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = det.preprocessor_(x)
        total = torch.zeros(len(x))
        for k in range(4):
            h = backbone_features(det.encoder_, torch.rot90(x, k, dims=(2, 3)), "auto")
            total += torch.log_softmax(det.rotation_head_(h).float(), dim=1)[:, k]
        scores.append(total / 4)
    return torch.cat(scores).numpy()


def memory_without(scores: np.ndarray, n_drop: int) -> np.ndarray:
    """Mask of the training images kept when the ``n_drop`` lowest ``scores`` are dropped."""
    keep = np.ones(len(scores), dtype=bool)
    keep[np.argsort(scores, kind="stable")[:n_drop]] = False
    return keep


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ratio", type=float, default=0.1, help="contamination share")
    parser.add_argument(
        "--terms",
        nargs="+",
        choices=list(TERMS),
        default=["full", "rot-conv", "rotation-only"],
    )
    parser.add_argument(
        "--params", default=PRESET_96, help="JSON set_params of every fit (default: the 96 px one)"
    )
    parser.add_argument("--max-train", type=int, default=300)
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--classes", type=int, nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON file the rows are written to")
    parser.add_argument(
        "--rotation-filter",
        action="store_true",
        help="also score against the memory the rotation head's confidence keeps",
    )
    parser.add_argument(
        "--frozen-filter",
        action="store_true",
        help="also score against the memory eq. 2 keeps on the untrained features",
    )
    parser.add_argument(
        "--score-neighbors",
        type=int,
        nargs="+",
        default=[],
        metavar="K",
        help="also score against the K nearest memory images (eq. 11 is K = 1)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    params = json.loads(args.params)

    # the runner's own splits: a pixel-kNN run returns them with the data
    _, _, data = run_benchmark(
        args.dataset,
        protocol="contaminated",
        estimator="knn-pixels",
        baselines={},
        ratio=args.ratio,
        classes=args.classes,
        seed=args.seed,
        max_train=args.max_train,
        max_test=args.max_test,
        verbose=0,
    )
    rows: list[dict[str, object]] = []
    print(f"{args.dataset}, ratio {args.ratio}, seed {args.seed}: AUROC % of eq. 11 against")
    rot_col = f" {'rot':>6}" if args.rotation_filter else ""
    rot_col += f" {'frozen':>6}" if args.frozen_filter else ""
    print(
        f"{'split':<20} {'term':<14} {'own':>6} {'all':>6} {'clean':>6}{rot_col}"
        "  contamination kept (filter AUROC)"
    )
    for split in data.splits:
        X_fit, X_test = data.X_train[split.train_idx], data.X_test[split.test_idx]
        contaminating = np.asarray(split.train_is_anomaly, dtype=bool)
        for term in args.terms:
            det = make_estimator(
                "convex-mil-pretrained", {**params, **TERMS[term]}, random_state=args.seed
            ).fit(X_fit)
            Z_fit, Z_test = det.transform(X_fit), det.transform(X_test)
            own = float(roc_auc_score(split.is_anomaly, -det.score_samples(X_test)))
            kept = getattr(det.scorer_, "inlier_mask_", np.ones(len(X_fit), dtype=bool))
            filter_scores = getattr(getattr(det.scorer_, "filter_", None), "train_scores_", None)
            row: dict[str, object] = {
                "split": split.name,
                "term": term,
                "own": own,
                "all": eq11_auroc(Z_fit, Z_test, split.is_anomaly),
                "clean": eq11_auroc(Z_fit[~contaminating], Z_test, split.is_anomaly),
                "contaminating": int(contaminating.sum()),
                "contaminating_kept": int((kept & contaminating).sum()),
                "filter_auroc": None
                if filter_scores is None
                else float(roc_auc_score(contaminating, -filter_scores)),
                # eqs. 1-3 in the last epoch: how many contaminating images they caught
                "abnormal_candidates": int(det.abnormal_candidates_.sum()),
                "abnormal_candidates_contaminating": int(
                    (det.abnormal_candidates_ & contaminating).sum()
                ),
            }
            memories = {"own": kept, "all": slice(None), "clean": ~contaminating}
            for k in args.score_neighbors:
                for memory, mask in memories.items():
                    row[f"{memory}_k{k}"] = eq11_auroc(Z_fit[mask], Z_test, split.is_anomaly, k)
            rot_text = ""
            if args.rotation_filter and det.rotation_head_ is not None:
                likelihood = rotation_likelihood(det, X_fit)
                by_rotation = memory_without(likelihood, int((~kept).sum()))
                row["rotation"] = eq11_auroc(Z_fit[by_rotation], Z_test, split.is_anomaly)
                row["rotation_kept"] = int((by_rotation & contaminating).sum())
                row["rotation_filter_auroc"] = float(roc_auc_score(contaminating, -likelihood))
                rot_text = f" {100 * row['rotation']:6.2f}"
            elif args.rotation_filter:
                rot_text = f" {'-':>6}"
            if args.frozen_filter:
                memory_filter = getattr(det.scorer_, "filter", None)
                if memory_filter is None:
                    raise SystemExit("--frozen-filter needs a memory_filter in --params")
                frozen = det.frozen_features().set_params(normalize=True)
                untrained = clone(memory_filter).fit(frozen.fit_transform(X_fit))
                by_frozen = memory_without(untrained.train_scores_, int((~kept).sum()))
                row["frozen"] = eq11_auroc(Z_fit[by_frozen], Z_test, split.is_anomaly)
                row["frozen_kept"] = int((by_frozen & contaminating).sum())
                row["frozen_filter_auroc"] = float(
                    roc_auc_score(contaminating, -untrained.train_scores_)
                )
                rot_text += f" {100 * row['frozen']:6.2f}"
            auroc = row["filter_auroc"]
            ranked = "" if auroc is None else f" ({100 * auroc:.1f})"
            rotation_kept = ""
            if "rotation_kept" in row:
                rotation_kept = (
                    f"; rotation {row['rotation_kept']} ({100 * row['rotation_filter_auroc']:.1f})"
                )
            if "frozen_kept" in row:
                rotation_kept += (
                    f"; frozen {row['frozen_kept']} ({100 * row['frozen_filter_auroc']:.1f})"
                )
            rows.append(row)
            print(
                f"{split.name:<20} {term:<14} {100 * own:6.2f} {100 * row['all']:6.2f} "
                f"{100 * row['clean']:6.2f}{rot_text}  {row['contaminating_kept']} of "
                f"{row['contaminating']}{ranked}{rotation_kept}"
            )
            for k in args.score_neighbors:
                print(
                    f"{'':<20} {f'  K = {k}':<14} {100 * row[f'own_k{k}']:6.2f} "
                    f"{100 * row[f'all_k{k}']:6.2f} {100 * row[f'clean_k{k}']:6.2f}"
                )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"command": ["python", *sys.argv], "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
