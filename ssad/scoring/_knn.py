"""kNN scorer on a faiss index: normality = minus the distance to the nearest training samples."""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np
from sklearn.preprocessing import normalize
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ssad.base import BaseDetector

__all__ = ["AUTO_IVF_MIN_SAMPLES", "KNNScorer", "index_rows"]

logger = logging.getLogger(__name__)

_AGGREGATES: dict[str, Callable[..., np.ndarray]] = {"sum": np.sum, "mean": np.mean, "max": np.max}

#: Largest absolute value a rescaled query may have: squared distances summed over
#: up to ~10^7 features then stay below float32's maximum (3.4e38).
_MAX_SCALED = 1e15

#: Training-set size from which ``index="auto"`` uses an IVF index instead of exact search.
AUTO_IVF_MIN_SAMPLES = 100_000

#: faiss' k-means wants at least 39 training points per centroid (it warns below).
_MIN_POINTS_PER_CENTROID = 39

#: Training points per IVF list drawn for the k-means of the coarse quantiser
#: (faiss' minimum, 39, and a little more).
_TRAIN_POINTS_PER_LIST = 40

#: GPU resources of faiss, created once per process on first use.
_GPU_RESOURCES: Any = None


def _power_of_two_scale(X: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Largest power of two <= max(|X|) (along ``axis``); 1 where that max is 0.

    Dividing by a power of two is exact in floating point, so rescaled data keep
    every digit and the distances are multiplied back exactly.
    """
    peak = np.max(np.abs(X), axis=axis, keepdims=axis is not None)
    _, exponent = np.frexp(peak)  # peak = m * 2**exponent with m in [0.5, 1)
    return np.where(peak > 0, np.ldexp(0.5, exponent), 1.0)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 norm (float64), at any magnitude.

    Each row is first divided by a power of two near its largest value, so
    ``normalize`` never squares values that overflow or underflow (float32
    rows beyond about 1e19 would otherwise become 0).  Zero rows stay 0.
    """
    return normalize(X / _power_of_two_scale(X, axis=1))


def _faiss_gpus() -> int:
    """Number of GPUs faiss can use (0 with the faiss-cpu package)."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _to_gpu(index: faiss.Index) -> faiss.Index:
    """The index on the first GPU; the CPU index where faiss has no GPU version of it."""
    global _GPU_RESOURCES
    if _GPU_RESOURCES is None:
        _GPU_RESOURCES = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(_GPU_RESOURCES, 0, index)
    except RuntimeError as exc:  # e.g. fast-scan PQ indexes have no GPU version
        logger.info("faiss cannot move %s to the GPU (%s); it searches on the CPU.", index, exc)
        return index


class KNNScorer(BaseDetector):
    """Outlier scores from the distances to the k nearest training samples.

    The training embeddings are stored in a faiss index: exact (flat) search
    for small training sets, an inverted-file (IVF) or graph (HNSW) index for
    large ones.  A sample scores minus the aggregate (sum, mean or maximum)
    of its distances to its ``n_neighbors`` nearest training samples, so
    points in dense regions of the training set are normal and isolated
    points are outliers.

    Parameters
    ----------
    n_neighbors : int or "sqrt", default=2
        Number of nearest training samples; must be smaller than the number
        of training samples.  ``"sqrt"``: ``ceil(sqrt(n_samples_fit))``
        (capped at ``n_samples_fit - 1``), a neighbourhood that grows with the
        training set, so that a small group of similar outliers in it cannot
        make each other look normal (used to filter training sets).
    metric : {"l2", "cosine"}, default="l2"
        ``"l2"``: Euclidean distance.  ``"cosine"``: cosine distance
        ``1 - cos(x, x_i)``, computed as an inner product of L2-normalised
        vectors (all-zero rows stay zero and are at distance 1 from
        everything, as in :func:`sklearn.metrics.pairwise.cosine_distances`).
    aggregate : {"sum", "mean", "max"}, default="sum"
        How the ``n_neighbors`` distances of a sample are combined; ``"max"``
        is the distance to the ``n_neighbors``-th neighbour.
    index : {"auto", "flat", "ivf", "hnsw"}, default="auto"
        The faiss index searched.  ``"flat"``: exact search, every training
        sample is compared with every query.  ``"ivf"``: an inverted file;
        the training samples are split into ``n_lists`` k-means cells and a
        query is compared with the samples of its ``n_probe`` nearest cells
        only.  ``"hnsw"``: a hierarchical navigable small-world graph with
        ``hnsw_m`` links per sample, searched with a beam of ``ef_search``.
        ``"auto"``: ``"flat"`` below :data:`~ssad.scoring.AUTO_IVF_MIN_SAMPLES` (100 000)
        training samples, ``"ivf"`` from there on (compressed as
        ``pq_subvectors`` says).  See Notes.
    n_lists : "auto" or int, default="auto"
        Number of IVF cells (faiss' ``nlist``).  ``"auto"``: ``4 * sqrt(n)``
        for ``n`` training samples, at most ``n / 39`` (faiss' k-means needs
        39 samples per cell) and at least 1.
    n_probe : int, default=16
        Number of IVF cells searched per query (faiss' ``nprobe``); more is
        slower and closer to exact.  ``n_probe >= n_lists`` is exact unless
        ``compression="pq"`` (its re-ranking sees only ``refine_factor * k``
        candidates).
    compression : {"auto", "pq", "sq8"} or None, default="auto"
        How an IVF index stores the vectors it scans.  ``"pq"``: product
        quantisation into ``pq_subvectors`` codes of 4 bits each, scanned
        with SIMD instructions (faiss' ``IndexIVFPQFastScan``; 8 features
        per byte for the default ``pq_subvectors``).  ``"sq8"``: one byte per
        feature (faiss' ``IndexIVFScalarQuantizer`` with ``QT_8bit``), 4x
        smaller than float32 and close to exact on any data.  None: float32
        vectors (faiss' ``IndexIVFFlat``).  A compressed index returns
        ``refine_factor * k`` candidates, re-ranked by their exact distances
        (see Notes).  ``"auto"``: ``"pq"`` when ``pq_subvectors`` is given, or
        when faiss searches on the CPU and the number of features is a
        multiple of 8; else None (GPUs scan full vectors fast).
    pq_subvectors : "auto" or int, default="auto"
        Number of 4-bit codes per vector with ``compression="pq"``; must
        divide the number of features.  ``"auto"``: one code per 8 features
        (48 for 384 features).
    refine_factor : int, default=32
        With a compressed IVF index: candidates searched per wanted
        neighbour, then re-ranked by their exact distances.  More raises the
        recall where compressed distances rank neighbours poorly (see Notes).
    hnsw_m : int, default=32
        Links per sample of the HNSW graph (faiss' ``M``).
    ef_search : int, default=64
        Beam width of an HNSW search (faiss' ``efSearch``); more is slower
        and closer to exact.
    batch_size : int, default=4096
        Number of samples searched at once; bounds the memory of a search.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where faiss searches.  ``"auto"``: on the first GPU when the
        installed faiss has GPU support (the ``faiss-gpu`` packages) and sees
        one, else on the CPU.  HNSW indexes always search on the CPU.
    random_state : int, RandomState instance or None, default=None
        Draws the sample the IVF cells are trained on (through a local
        generator; global RNGs are untouched).
    contamination : "auto" or float in (0, 0.5], default="auto"
        Expected share of outliers in the training data; sets ``offset_``
        (``"auto"`` = 0.1).

    Attributes
    ----------
    n_samples_fit_ : int
        Number of training samples in the index.
    n_neighbors_ : int
        The number of neighbours searched (``n_neighbors`` with ``"sqrt"``
        resolved).
    index_ : {"flat", "ivf", "hnsw"}
        The index built (``index`` with ``"auto"`` resolved).
    n_lists_ : int or None
        Number of IVF cells; None for the other indexes.
    compression_ : {"pq", "sq8"} or None
        How the IVF index stores its vectors (``compression`` with
        ``"auto"`` resolved); None for the other indexes.
    pq_subvectors_ : int or None
        Number of 4-bit PQ codes per vector in the IVF index; None unless
        ``compression_ == "pq"``.
    scale_ : float
        Power of two the features are divided by before the float32 search
        (``metric="l2"``): the largest one not above the largest absolute
        training value.  1.0 for ``metric="cosine"``.  See Notes.
    offset_ : float
        Threshold on ``score_samples``: training samples below it (a share
        ``contamination`` of them) are predicted as outliers.
    train_scores_ : ndarray of shape (``n_samples_fit_``,)
        Leave-one-out scores of the training samples (they set ``offset_``).
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of features seen during ``fit``; only set when ``X`` has string
        column names.

    See Also
    --------
    sklearn.neighbors.NearestNeighbors : The same neighbours, without faiss.
    sklearn.neighbors.LocalOutlierFactor : Density-ratio score on k neighbours.
    ssad.scoring.CosineKernelScorer : Soft version of the cosine kNN score over
        all training samples.

    Notes
    -----
    ``score_samples(X) = -aggregate(distances to the n_neighbors nearest
    training samples)``.  For ``metric="cosine"`` this is the aggregated cosine
    similarity up to a constant: ``sum(cos) - n_neighbors`` for ``"sum"``,
    ``mean(cos) - 1`` for ``"mean"`` and ``min(cos) - 1`` for ``"max"``.

    **Exact and approximate search.**  The flat index compares a query with
    every training sample: ``O(n)`` per query, so the leave-one-out training
    scores cost ``O(n^2)``, about an hour for a million 384-d embeddings on
    two CPU cores.  IVF and HNSW search a small part of the training set per
    query (IVF: ``n_probe`` of ``n_lists ~ 4 sqrt(n)`` cells, so
    ``O(sqrt(n))`` per query; HNSW: ``O(log n)`` graph steps), and may miss a
    true neighbour; the distances of the neighbours they return are exact
    (with ``compression``, after re-ranking ``refine_factor * k``
    compressed-distance candidates by their exact distances to the stored
    training matrix).  Recall against exact search depends on the data, and
    so does the best index: on embeddings of real images, whose variance
    lies in a few directions, 4-bit PQ ranks neighbours well and the
    probed cells limit the recall (``n_probe``); on data with noise spread
    over every feature, the members of a cell are at almost equal
    distances, PQ's coarse distances cannot rank them, and ``"sq8"`` or a
    larger ``refine_factor`` is needed.  The ``knn`` command of
    ``examples/scaling_benchmarks.py`` measures speed and recall on both
    kinds.  The IVF cells (and PQ codebooks, 8-bit ranges) are trained by
    faiss' k-means on ``40 * n_lists`` training samples (at least 624 with
    PQ) drawn with ``random_state``.  A query
    whose probed cells hold fewer than the wanted neighbours is searched
    exactly.

    All indexes search in float32, faiss' only precision: the inputs are cast
    to float32, the Euclidean distance is the square root of faiss' squared
    distance (clipped at 0 against round-off), and the scores are returned as
    float64.

    So that features of any magnitude fit float32's range (squared distances
    of features around 1e20 overflow it, those of features around 1e-30
    vanish), the features are divided by ``scale_``, a power of two fitted on
    the training data, before they are cast, and the distances are multiplied
    back: dividing by a power of two is exact, so the scores are those of the
    unscaled features, up to float32 rounding.  With ``metric="cosine"`` each
    row is divided by its own power of two before it is L2-normalised.
    Samples whose values exceed the training scale by a factor above 1e15
    are refused with a ``ValueError`` (their squared distances would overflow
    float32).

    ``offset_`` comes from *leave-one-out* training scores: each training
    sample is scored against the other training samples (``n_neighbors + 1``
    are searched through the same index and the sample itself is dropped),
    as :meth:`sklearn.neighbors.NearestNeighbors.kneighbors` does with
    ``X=None``.  So ``predict`` flags about ``contamination`` of *new* samples
    from the training distribution.  ``score_samples(X_train)`` itself keeps
    each training sample as its own neighbour (at distance 0), which is why
    ``predict(X_train)`` flags fewer than ``contamination`` of the training
    samples, and why scikit-learn's ``check_outliers_train`` and
    ``check_outliers_fit_predict`` are expected to fail for this estimator.
    ``n_neighbors`` must be smaller than the number of training samples.

    The reference code of Mean-Shifted Contrastive Loss [1]_ scores with the
    sum of the *squared* L2 distances between L2-normalised features
    to the 2 nearest neighbours; on unit vectors that is ``2 * (1 - cos)``
    per neighbour, so ``KNNScorer(metric="cosine", aggregate="sum")`` gives
    ``-1/2`` times that score (same ranking).

    faiss indexes do not pickle.  The training matrix (float32) does, with
    what was learned besides it: the IVF cell centres (and PQ codebooks) and
    the HNSW graph.  The index is rebuilt from them on first use after
    unpickling or :func:`ssad.load`, without retraining, so it searches as
    the fitted one did.

    References
    ----------
    .. [1] T. Reiss and Y. Hoshen, "Mean-Shifted Contrastive Loss for Anomaly
       Detection", AAAI, 2023;
       code: https://github.com/talreiss/Mean-Shifted-Anomaly-Detection
    .. [2] J. Johnson, M. Douze and H. Jégou, "Billion-scale similarity search
       with GPUs", IEEE Transactions on Big Data, 2019 (faiss).
    .. [3] Y. A. Malkov and D. A. Yashunin, "Efficient and robust approximate
       nearest neighbor search using Hierarchical Navigable Small World
       graphs", IEEE TPAMI, 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from ssad.scoring import KNNScorer
    >>> X = np.random.default_rng(0).normal(size=(100, 2))
    >>> scorer = KNNScorer(n_neighbors=2).fit(X)
    >>> scorer.score_samples([[0.0, 0.0], [5.0, 5.0]]).round(2)
    array([-0.4 , -9.55])
    >>> scorer.predict([[0.0, 0.0], [5.0, 5.0]])
    array([ 1, -1])

    An inverted-file index for a large reference set (``"auto"`` picks it from
    100 000 training samples on):

    >>> ivf = KNNScorer(index="ivf", n_lists=4, n_probe=2, random_state=0).fit(X)
    >>> ivf.index_, ivf.n_lists_
    ('ivf', 4)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseDetector._parameter_constraints,
        "n_neighbors": [Interval(numbers.Integral, 1, None, closed="left"), StrOptions({"sqrt"})],
        "metric": [StrOptions({"l2", "cosine"})],
        "aggregate": [StrOptions(set(_AGGREGATES))],
        "index": [StrOptions({"auto", "flat", "ivf", "hnsw"})],
        "n_lists": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "n_probe": [Interval(numbers.Integral, 1, None, closed="left")],
        "compression": [StrOptions({"auto", "pq", "sq8"}), None],
        "pq_subvectors": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "refine_factor": [Interval(numbers.Integral, 1, None, closed="left")],
        "hnsw_m": [Interval(numbers.Integral, 2, None, closed="left")],
        "ef_search": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [StrOptions({"auto", "cpu", "cuda"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        n_neighbors: int | str = 2,
        metric: str = "l2",
        aggregate: str = "sum",
        index: str = "auto",
        n_lists: str | int = "auto",
        n_probe: int = 16,
        compression: str | None = "auto",
        pq_subvectors: str | int = "auto",
        refine_factor: int = 32,
        hnsw_m: int = 32,
        ef_search: int = 64,
        batch_size: int = 4096,
        device: str = "auto",
        random_state: Any = None,
        contamination: str | float = "auto",
    ) -> None:
        super().__init__(contamination=contamination)
        self.n_neighbors = n_neighbors
        self.metric = metric
        self.aggregate = aggregate
        self.index = index
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.compression = compression
        self.pq_subvectors = pq_subvectors
        self.refine_factor = refine_factor
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.batch_size = batch_size
        self.device = device
        self.random_state = random_state

    # -- fit -------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray) -> np.ndarray:
        n_samples = X.shape[0]
        if self.n_neighbors == "sqrt":
            self.n_neighbors_ = max(1, min(math.ceil(math.sqrt(n_samples)), n_samples - 1))
        else:
            self.n_neighbors_ = int(self.n_neighbors)
        if self.n_neighbors_ >= n_samples:
            # scikit-learn's kneighbors wording; the training scores leave each sample out
            raise ValueError(
                "Expected n_neighbors < n_samples_fit (each training sample is scored "
                "against the others), but n_neighbors = "
                f"{self.n_neighbors}, n_samples_fit = {n_samples}, n_samples = {n_samples}"
            )
        self._build(X, check_random_state(self.random_state))
        return self._search_scores(self._fit_X, leave_self_out=True)

    def _build(self, X: np.ndarray, rng: np.random.RandomState) -> None:
        """Index the rows of X (``fit`` without the training scores)."""
        n_samples, n_features = X.shape
        kind = self.index
        if kind == "auto":
            kind = "ivf" if n_samples >= AUTO_IVF_MIN_SAMPLES else "flat"
        self.index_ = kind
        self.n_lists_ = self._resolve_n_lists(n_samples) if kind == "ivf" else None
        self.compression_, self.pq_subvectors_ = self._resolve_compression(
            kind, n_samples, n_features
        )
        if self.device == "cuda" and _faiss_gpus() == 0:
            raise RuntimeError(
                "device='cuda' was requested but the installed faiss sees no GPU (the "
                "faiss-cpu package has no GPU support); install a faiss-gpu package "
                "or use device='auto'."
            )
        self.scale_ = 1.0 if self.metric == "cosine" else float(_power_of_two_scale(X))
        self._fit_X = self._prepare(X)
        self.n_samples_fit_ = n_samples
        self._trained: dict[str, Any] = {}
        self._index = self._build_index(rng)
        logger.debug(
            "Indexed %d training samples (index=%r, metric=%r).", n_samples, kind, self.metric
        )

    def _resolve_compression(
        self, kind: str, n_samples: int, n_features: int
    ) -> tuple[str | None, int | None]:
        """``(compression_, pq_subvectors_)`` for an index of ``kind``."""
        compression = self.compression
        if compression == "auto":
            on_gpu = self.device != "cpu" and _faiss_gpus() > 0
            # 4-bit codes of 8-feature sub-vectors, on CPUs, where scanning full vectors
            # is bound by memory bandwidth (GPUs scan them fast: no compression there)
            auto_pq = kind == "ivf" and not on_gpu and n_features % 8 == 0 and n_samples >= 16
            compression = "pq" if auto_pq or self.pq_subvectors != "auto" else None
        if compression is None:
            return None, None
        if kind != "ivf":
            raise ValueError(
                f"compression={compression!r} compresses the vectors of an IVF index: it "
                f"needs index='ivf' (or 'auto' from {AUTO_IVF_MIN_SAMPLES} samples on). "
                f"Got index={self.index!r}, which built a {kind!r} index."
            )
        if compression == "sq8":
            return "sq8", None
        if n_samples < 16:
            raise ValueError(
                "compression='pq' needs at least 16 training samples (its 4-bit codes are "
                f"16 k-means centres per sub-vector); got {n_samples}."
            )
        pq = n_features // 8 if self.pq_subvectors == "auto" else int(self.pq_subvectors)
        if pq == 0 or n_features % pq:
            raise ValueError(
                f"pq_subvectors must divide the number of features ({n_features}); "
                f"pq_subvectors={self.pq_subvectors!r} gives {pq} sub-vectors. Pass an int "
                "that divides it, or compression='sq8'."
            )
        return "pq", pq

    def _resolve_n_lists(self, n_samples: int) -> int:
        if self.n_lists == "auto":
            n_lists = min(round(4 * math.sqrt(n_samples)), n_samples // _MIN_POINTS_PER_CENTROID)
            return max(1, n_lists)
        if int(self.n_lists) > n_samples:
            raise ValueError(
                f"n_lists must be at most the number of training samples ({n_samples}): "
                f"each IVF cell is a k-means centre of them. Got n_lists={self.n_lists} instead."
            )
        return int(self.n_lists)

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        """The float32 C-contiguous vectors faiss searches: divided by ``scale_``
        (l2) or L2-normalised (cosine)."""
        if self.metric == "cosine":
            X = _unit_rows(X)
        else:
            X = X / self.scale_
            peak = float(np.max(np.abs(X))) if X.size else 0.0
            if peak > _MAX_SCALED:
                raise ValueError(
                    f"X has values up to {peak * self.scale_:g} in absolute value, more than "
                    f"{_MAX_SCALED:g} times the scale of the training data "
                    f"(scale_={self.scale_:g}); their distances overflow the float32 search "
                    "of faiss. Rescale the features, or fit on data of the same scale."
                )
        return np.ascontiguousarray(X, dtype=np.float32)

    # -- the index ---------------------------------------------------------------------------
    @property
    def _faiss_metric(self) -> int:
        return int(faiss.METRIC_INNER_PRODUCT if self.metric == "cosine" else faiss.METRIC_L2)

    def _build_index(self, rng: np.random.RandomState | None = None) -> faiss.Index:
        """Build the index of ``_fit_X``: trained with ``rng`` in ``fit``, else (unpickled)
        from the learned state in ``_trained``."""
        d = self._fit_X.shape[1]
        index: Any
        if self.index_ == "flat":
            index = faiss.IndexFlat(d, self._faiss_metric)
            index.add(self._fit_X)
        elif self.index_ == "hnsw":
            index = self._build_hnsw(d)
        else:
            index = self._build_ivf(d, rng)
        if self.device != "cpu" and self.index_ != "hnsw" and _faiss_gpus() > 0:
            index = _to_gpu(index)
        return index

    def _build_ivf(self, d: int, rng: np.random.RandomState | None) -> faiss.Index:
        assert self.n_lists_ is not None
        quantizer = faiss.IndexFlat(d, self._faiss_metric)
        index: Any  # faiss' stubs type the IVF and PQ fields loosely
        if self.compression_ == "pq":
            assert self.pq_subvectors_ is not None
            # 4-bit codes scanned with SIMD (faiss' "fast scan"): the fastest CPU scan
            index = faiss.IndexIVFPQFastScan(
                quantizer, d, self.n_lists_, self.pq_subvectors_, 4, self._faiss_metric
            )
        elif self.compression_ == "sq8":
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, d, self.n_lists_, faiss.ScalarQuantizer.QT_8bit, self._faiss_metric
            )
        else:
            index = faiss.IndexIVFFlat(quantizer, d, self.n_lists_, self._faiss_metric)
        index.nprobe = min(self.n_probe, self.n_lists_)
        if rng is not None:  # fit: k-means of the cells (and PQ codebooks) on a sample
            n_train = _TRAIN_POINTS_PER_LIST * self.n_lists_
            if self.compression_ == "pq":  # 16 centres per sub-vector
                n_train = max(n_train, 16 * _MIN_POINTS_PER_CENTROID)
            n_train = min(self.n_samples_fit_, n_train)
            rows = np.sort(rng.choice(self.n_samples_fit_, n_train, replace=False))
            index.train(self._fit_X[rows])
            self._trained["centroids"] = quantizer.reconstruct_n(0, self.n_lists_)
            if self.compression_ == "pq":
                self._trained["pq_codebook"] = faiss.vector_to_array(index.pq.centroids)
            elif self.compression_ == "sq8":  # the per-feature ranges of the 8-bit codes
                self._trained["sq_ranges"] = faiss.vector_to_array(index.sq.trained)
        else:  # unpickled: the learned centres, codebooks and ranges, no retraining
            quantizer.add(np.ascontiguousarray(self._trained["centroids"], dtype=np.float32))
            if self.compression_ == "pq":
                codebook = np.ascontiguousarray(self._trained["pq_codebook"], dtype=np.float32)
                faiss.copy_array_to_vector(codebook, index.pq.centroids)
                index.precompute_table()
            elif self.compression_ == "sq8":
                ranges = np.ascontiguousarray(self._trained["sq_ranges"], dtype=np.float32)
                faiss.copy_array_to_vector(ranges, index.sq.trained)
            index.is_trained = True
        index.add(self._fit_X)
        return index

    def _build_hnsw(self, d: int) -> faiss.Index:
        index: Any = faiss.IndexHNSWFlat(d, self.hnsw_m, self._faiss_metric)
        index.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
        index.hnsw.efSearch = self.ef_search
        graph = self._trained.get("hnsw")
        if graph is None:  # fit: build the graph (in parallel: not reproducible bit for bit)
            index.add(self._fit_X)
            hnsw = index.hnsw
            self._trained["hnsw"] = {
                "levels": faiss.vector_to_array(hnsw.levels),
                "offsets": faiss.vector_to_array(hnsw.offsets),
                "neighbors": faiss.vector_to_array(hnsw.neighbors),
                "entry_point": int(hnsw.entry_point),
                "max_level": int(hnsw.max_level),
            }
            return index
        # unpickled: the stored graph over the stored vectors, checked so that a
        # damaged file cannot make faiss read outside its arrays
        n = self.n_samples_fit_
        levels = np.asarray(graph["levels"], dtype=np.int32)
        offsets = np.asarray(graph["offsets"], dtype=np.uint64)
        neighbors = np.asarray(graph["neighbors"], dtype=np.int32)
        per_level = faiss.vector_to_array(index.hnsw.cum_nneighbor_per_level).astype(np.int64)
        entry, top = int(graph["entry_point"]), int(graph["max_level"])
        ok = (
            levels.shape == (n,)
            and offsets.shape == (n + 1,)
            and levels.min() >= 1
            and levels.max() < len(per_level)
            and offsets[0] == 0
            and np.array_equal(np.diff(offsets.astype(np.int64)), per_level[levels])
            and int(offsets[-1]) == len(neighbors)
            and neighbors.min() >= -1
            and neighbors.max() < n
            and 0 <= entry < n
            and top == levels[entry] - 1
        )
        if not ok:
            raise ValueError(
                "The stored HNSW graph does not match the stored training matrix of this "
                "KNNScorer; the file is damaged. Refit the scorer."
            )
        index.storage.add(self._fit_X)
        index.ntotal = n
        faiss.copy_array_to_vector(levels, index.hnsw.levels)
        faiss.copy_array_to_vector(offsets, index.hnsw.offsets)
        faiss.copy_array_to_vector(neighbors, index.hnsw.neighbors)
        index.hnsw.entry_point, index.hnsw.max_level = entry, top
        return index

    # -- search --------------------------------------------------------------------------------
    def _score_samples(self, X: np.ndarray) -> np.ndarray:
        return self._search_scores(self._prepare(X), leave_self_out=False)

    def kneighbors(self, X: Any, n_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The nearest training samples of each sample, through the index.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Query samples.
        n_neighbors : int, default=None
            Number of neighbours to return; default: ``n_neighbors_``.  At
            most ``n_samples_fit_``.

        Returns
        -------
        distances : ndarray of shape (n_samples, n_neighbors), dtype float64
            Euclidean or cosine distances (``metric``), nearest first.
        indices : ndarray of shape (n_samples, n_neighbors), dtype int64
            Positions of the neighbours in the training data.
        """
        check_is_fitted(self, "n_samples_fit_")
        k = self.n_neighbors_ if n_neighbors is None else n_neighbors
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or int(k) < 1:
            raise ValueError(f"Expected n_neighbors to be a positive int, got {n_neighbors!r}.")
        k = int(k)
        if k > self.n_samples_fit_:
            raise ValueError(
                f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, "
                f"n_samples_fit = {self.n_samples_fit_}."
            )
        queries = self._prepare(self._validate_input(X, reset=False))
        if self._index is None:
            self._index = self._build_index()
        found, idx = self._search(queries, k)
        return self._distances(found.astype(np.float64)), idx.astype(np.int64)

    def _distances(self, found: np.ndarray) -> np.ndarray:
        """faiss' similarities (squared L2, inner products) -> distances."""
        if self.metric == "cosine":
            return np.clip(1.0 - found, 0.0, 2.0)
        return np.sqrt(np.maximum(found, 0.0)) * self.scale_

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss' similarities (squared L2 or inner products) and ids of the ``k``
        nearest training samples of each query, best first."""
        if self.compression_ is not None:
            n_candidates = min(self.n_samples_fit_, k * self.refine_factor)
            _, idx = self._index.search(queries, n_candidates)
            found = self._exact(queries, idx)
            found, idx = found[:, :k], idx[:, :k]
        else:
            found, idx = self._index.search(queries, k)
        missing = (idx < 0).any(axis=1)
        if missing.any():  # the probed cells held fewer than k samples: search exactly
            logger.debug("%d queries searched exactly (too few candidates).", missing.sum())
            found[missing], idx[missing] = faiss.knn(
                queries[missing], self._fit_X, k, metric=self._faiss_metric
            )
        return found, idx

    def _exact(self, queries: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Exact similarities of the candidates ``idx`` (re-ranking); sorts ``idx`` in place.

        faiss computes them from the stored rows in place (``fvec_*_by_idx``), without
        gathering the candidates' vectors into a temporary array; ``-1`` ids (missing
        candidates) come out as the worst value."""
        n, k = idx.shape
        sim = np.empty((n, k), dtype=np.float32)
        ids = np.ascontiguousarray(idx, dtype=np.int64)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        by_idx = "fvec_inner_products_by_idx" if self.metric == "cosine" else "fvec_L2sqr_by_idx"
        compute = getattr(faiss, by_idx)  # not in faiss' type stubs
        ptr = faiss.swig_ptr
        compute(ptr(sim), ptr(queries), ptr(self._fit_X), ptr(ids), queries.shape[1], n, k)
        if self.metric == "cosine":
            sim[idx < 0] = -np.inf
            order = np.argsort(-sim, axis=1, kind="stable")
        else:
            sim[idx < 0] = np.inf
            order = np.argsort(sim, axis=1, kind="stable")
        idx[:] = np.take_along_axis(idx, order, axis=1)
        return np.take_along_axis(sim, order, axis=1)

    def _search_scores(self, queries: np.ndarray, leave_self_out: bool) -> np.ndarray:
        """Scores of ``queries``; with ``leave_self_out`` (queries = the training set)
        each row's own entry is removed from its neighbours."""
        if self._index is None:  # unpickled: rebuild from the stored state
            self._index = self._build_index()
        aggregate = _AGGREGATES[self.aggregate]
        k = self.n_neighbors_ + int(leave_self_out)
        scores = np.empty(queries.shape[0], dtype=np.float64)
        for batch in gen_batches(queries.shape[0], self.batch_size):
            found, idx = self._search(queries[batch], k)
            found = found.astype(np.float64)
            if leave_self_out:
                rows = np.arange(batch.start, batch.stop)[:, None]
                is_self = idx == rows
                # drop the query's own entry; if ties (or an approximate index) pushed it
                # out, drop the farthest
                is_self[~is_self.any(axis=1), -1] = True
                is_self &= np.cumsum(is_self, axis=1) == 1
                found = found[~is_self].reshape(len(found), self.n_neighbors_)
            scores[batch] = -aggregate(self._distances(found), axis=1)
        return scores

    def __getstate__(self) -> dict[str, Any]:
        # faiss indexes do not pickle: drop the index, _search_scores rebuilds it.
        state: dict[str, Any] = super().__getstate__()
        return {**state, "_index": None} if "_index" in state else state


def index_rows(X: np.ndarray, **params: Any) -> KNNScorer:
    """A :class:`KNNScorer` with ``params`` that indexes the rows of X for
    :meth:`~KNNScorer.kneighbors` only: a memory bank a detector searches but
    never scores (no training scores, no ``offset_``; ``predict`` is unavailable).

    ``params["n_neighbors"]`` must be an int; it is the default of ``kneighbors``.
    """
    search = KNNScorer(**params)
    search._validate_params()
    X = search._validate_input(X, reset=True)
    if not isinstance(search.n_neighbors, numbers.Integral):
        raise ValueError(f"index_rows needs an int n_neighbors, got {search.n_neighbors!r}.")
    search.n_neighbors_ = min(int(search.n_neighbors), X.shape[0])
    search._build(X, check_random_state(search.random_state))
    return search
