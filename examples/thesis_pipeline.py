"""The thesis pipeline on one leave-one-class-out split, before and after GMM filtering.

Leave-one-class-out: the training images are drawn from every class but one
(``--held-out-class``), and the test images of that class are the anomalies.
Each image becomes every output token of a pretrained network, flattened
(``pooling="tokens"``, what the thesis does with its DINO and MAE models;
here the offline ImageNet EfficientNet-Lite0, whose tokens are the positions
of its last feature map), then PCA to 100 dimensions, then a K-means score
(K by the elbow), fitted on all training rows or only on those a GMM filter
keeps.  ``thesis_scores`` computes both from one feature extraction and
prints K before and after filtering, so the filter's effect can be read at
the K it chose.  The registered ``thesis-efficientnet`` and the
``thesis-leave-one-out`` preset run the same pipeline on every split.

Run:  python examples/thesis_pipeline.py [--held-out-class 0] [--n-train 1000]
"""

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from ssad import TimmFeatures
from ssad.backbones import efficientnet_lite0_checkpoint
from ssad.datasets import load_dataset
from ssad.detectors import thesis_scores


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["fashion-mnist", "digits"], default="fashion-mnist")
    parser.add_argument("--held-out-class", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-components", type=int, default=100, help="PCA dimension")
    parser.add_argument(
        "--backbone",
        default="tf_efficientnet_lite0",
        help="timm model; the default loads the offline ImageNet weights, any other "
        "name starts from random weights (for a quick try: test_resnet)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    data = load_dataset(args.dataset, random_state=args.seed)
    normal = np.flatnonzero(data.y_train != args.held_out_class)
    X_train = data.X_train[rng.choice(normal, min(args.n_train, len(normal)), replace=False)]
    test = rng.choice(len(data.y_test), min(args.n_test, len(data.y_test)), replace=False)
    X_test, is_anomaly = data.X_test[test], data.y_test[test] == args.held_out_class
    print(
        f"{args.dataset}: class {args.held_out_class} ({data.target_names[args.held_out_class]}) "
        f"held out; {len(X_train)} training images of the other classes, {len(X_test)} test "
        f"images ({is_anomaly.mean():.0%} anomalies)"
    )

    offline = args.backbone == "tf_efficientnet_lite0"
    features = TimmFeatures(
        args.backbone,
        pretrained=offline,
        checkpoint_path=efficientnet_lite0_checkpoint() if offline else None,
        pooling="tokens",
        image_size=args.image_size,
    )
    start = time.perf_counter()
    out = thesis_scores(
        X_train, X_test, features, n_components=args.n_components, random_state=args.seed
    )
    k_before, k_after = out["n_clusters"]
    aurocs = {
        "kmeans": roc_auc_score(is_anomaly, -out["kmeans"]),
        "gmm_filtered_kmeans": roc_auc_score(is_anomaly, -out["gmm_filtered_kmeans"]),
    }
    rows = [
        (f"K-means on every training image (K = {k_before})", aurocs["kmeans"]),
        (
            f"K-means after the GMM filter (K = {k_after}, {out['n_filtered']} dropped)",
            aurocs["gmm_filtered_kmeans"],
        ),
    ]
    for name, auroc in rows:
        print(f"{name:55s} AUROC {100 * auroc:5.1f}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return aurocs


if __name__ == "__main__":
    main()
