"""Which loss term of ConvexMIL helps or hurts: the pretrained variant, one term at a time.

``ConvexMILDetector`` trains with three losses (eq. 10 of the paper): the
convex multi-instance loss ``L_conv``, the mean-shifted contrastive loss
``L_mean`` and the rotation loss ``L_rot``.  The runner's
``convex-mil-pretrained`` always runs its ``rotation-only`` companion; this
script fits, on the same contaminated splits and with the same memory filter,
only the terms asked for:

- ``full``: all three losses (``convex-mil-pretrained``);
- ``rot-conv``: without the mean-shifted loss (``lambda_mean=0``);
- ``rot-mean``: without the convex loss (``use_convex=False``);
- ``rotation-only``: the rotation loss alone;

each as ``pretrained-<term>``, beside the default baselines (``knn-frozen``,
kNN and the isolation forest on pixels).  The first term is the report's
estimator row (its embeddings also give ``knn-embeddings``).  A seed repeats
the training to within hundredths of a point of mean AUROC, so rows already
measured in a runner report need not be fitted again.

Run:  python examples/convex_mil_terms.py --dataset fashion-mnist --ratio 0.05 \
          --max-train 1000 --seed 0 --terms rot-conv rot-mean --out docs/results
"""

import argparse
import json
import sys

from ssad.benchmarks import (
    Variant,
    make_estimator,
    register_estimator,
    report_stem,
    run_benchmark,
    write_report,
)

DEFAULT_PARAMS = '{"memory_filter": "pseudo_normality", "memory_neighbors": "sqrt"}'
TERMS = {
    "full": {},
    "rot-conv": {"lambda_mean": 0.0},
    "rot-mean": {"use_convex": False},
    "rotation-only": {"use_convex": False, "lambda_mean": 0.0},
}


def register_terms(params: dict[str, object]) -> None:
    """Register ``pretrained-<term>`` for every term: ``convex-mil-pretrained`` + params + term."""
    for term, own in TERMS.items():

        def factory(random_state: int | None = None, own: dict = own) -> object:
            return make_estimator(
                "convex-mil-pretrained", {**params, **own}, random_state=random_state
            )

        register_estimator(
            f"pretrained-{term}",
            factory,
            description=f"convex-mil-pretrained, {term} ({own or 'all three losses'})",
            overwrite=True,
        )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--ratio", type=float, default=0.05, help="contamination share")
    parser.add_argument("--terms", nargs="+", choices=list(TERMS), default=["rot-conv", "rot-mean"])
    parser.add_argument(
        "--params",
        default=DEFAULT_PARAMS,
        help="JSON set_params of every row (default: the sqrt memory filter)",
    )
    parser.add_argument("--max-train", type=int, help="training images per split, at most")
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--n-epochs", type=int, help="training epochs of every row")
    parser.add_argument("--classes", type=int, nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="folder of the reports")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if len(set(args.terms)) != len(args.terms):
        parser.error(f"--terms must not repeat a term; got {args.terms}")

    params = json.loads(args.params)
    register_terms(params)
    first, *rest = args.terms
    name = f"{args.dataset}_contaminated_convex-mil-terms-{'-'.join(args.terms)}"
    # the rows' own params are not the runner's, so they enter the report's stem
    # here: runs with other --params never share a file (the default adds nothing)
    overrides = {
        "params": None if params == json.loads(DEFAULT_PARAMS) else params,
        "max_train": args.max_train,
        "max_test": args.max_test,
        "n_epochs": args.n_epochs,
    }
    result, _, _ = run_benchmark(
        args.dataset,
        protocol="contaminated",
        estimator=f"pretrained-{first}",
        ratio=args.ratio,
        ablations={f"pretrained-{t}": Variant(estimator=f"pretrained-{t}") for t in rest},
        classes=args.classes,
        seed=args.seed,
        max_train=args.max_train,
        max_test=args.max_test,
        n_epochs=args.n_epochs,
        name=name,
        stem=report_stem(
            name, seed=args.seed, ratio=args.ratio, classes=args.classes, overrides=overrides
        ),
        out=args.out,
        verbose=0,
        command=["python", "examples/convex_mil_terms.py", *argv],
    )
    aurocs = {m.name: 100 * m.mean_auroc for m in result.models}
    print(f"{args.dataset}, ratio {args.ratio}, seed {args.seed}: mean AUROC %")
    for name, auroc in aurocs.items():
        print(f"  {name:24s} {auroc:5.1f}")
    if args.out:
        print("wrote", *write_report(result, args.out)[:2])
    return aurocs


if __name__ == "__main__":
    main()
