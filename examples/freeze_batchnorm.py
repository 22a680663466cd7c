"""Training that cannot move the weights must leave the frozen backbone's scores.

A detector that fine-tunes a pretrained backbone is compared with kNN on the
frozen features of that backbone (``knn-frozen``).  The comparison is only
fair if a training run that cannot change the weights scores as the frozen
backbone does.  This trains each detector from ImageNet EfficientNet-Lite0
at ``learning_rate=1e-12`` (the weights stay where they started) and reports,
on the one-class protocol:

- the detector as registered (``freeze_batchnorm="auto"``: the BatchNorm
  layers of a pretrained backbone stay in eval mode while training);
- ``batchnorm-trained``: the same with ``freeze_batchnorm=False``, so the
  BatchNorm running statistics are re-estimated on the augmented training
  views;
- ``frozen-same-scorer``: the untrained backbone (``frozen_features()``)
  under the detector's own scorer (eq. 11's nearest cosine neighbour for
  ConvexMIL, the cosine kernel for self-distillation);

beside the default baselines.  The first and third rows must agree.

Run:  python examples/freeze_batchnorm.py --dataset fashion-mnist --classes 0 \
          --max-train 300 --max-test 1000 --out docs/results
"""

import argparse
import json
import sys

from sklearn.pipeline import Pipeline

from ssad import ConvexMILDetector
from ssad.benchmarks import make_estimator, run_benchmark, write_report
from ssad.scoring import CosineKernelScorer, KNNScorer

DETECTORS = ("convex-mil-pretrained", "self-distill-cpu")


def same_scorer(det: object) -> object:
    """An unfitted copy of the scorer the detector fits on its embeddings."""
    if isinstance(det, ConvexMILDetector):
        return KNNScorer(metric="cosine", n_neighbors=1)  # eq. 11, no memory filter
    if getattr(det, "scorer", None) != "cosine_kernel":
        raise ValueError(f"Only scorer='cosine_kernel' is reproduced here, not {det.scorer!r}.")
    return CosineKernelScorer(temperature=det.kernel_temperature)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--classes", type=int, nargs="+", default=[0])
    parser.add_argument("--max-train", type=int, default=300)
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--n-epochs", type=int, default=2)
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    parser.add_argument("--params", default="{}", help="JSON, set on every detector row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder of the reports")
    args = parser.parse_args(argv)
    params = {**json.loads(args.params), "learning_rate": 1e-12}
    command = ["python", "examples/freeze_batchnorm.py", *(sys.argv[1:] if argv is None else argv)]

    out: dict[str, dict[str, float]] = {}
    for name in args.detectors:
        det = make_estimator(name, params, random_state=args.seed)
        det.set_params(image_size=args.image_size)
        frozen = Pipeline([("features", det.frozen_features()), ("scorer", same_scorer(det))])
        moving = make_estimator(name, {**params, "freeze_batchnorm": False}, random_state=args.seed)
        result, _, _ = run_benchmark(
            args.dataset,
            protocol="one-class",
            estimator=name,
            params=params,
            baselines={"batchnorm-trained": moving, "frozen-same-scorer": frozen},
            classes=args.classes,
            seed=args.seed,
            max_train=args.max_train,
            max_test=args.max_test,
            image_size=args.image_size,
            n_epochs=args.n_epochs,
            name=f"{args.dataset}_one-class_freeze-batchnorm-{name}",
            out=args.out,
            verbose=0,
            command=command,
        )
        out[name] = {m.name: 100 * m.mean_auroc for m in result.models}
        print(name, {k: round(v, 2) for k, v in out[name].items()})
        if args.out:
            print("wrote", *write_report(result, args.out)[:2])
    return out


if __name__ == "__main__":
    main()
