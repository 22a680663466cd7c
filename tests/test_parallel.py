"""Data-parallel scoring with Dask on a two-worker LocalCluster: the same scores as serial."""

import doctest

import numpy as np
import pytest
from PIL import Image
from sklearn.exceptions import NotFittedError

from ssad import TransformalyDetector
from ssad.parallel import score_dask

da = pytest.importorskip("dask.array")
db = pytest.importorskip("dask.bag")
distributed = pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def client():
    # threads in one process: the cluster starts in a second; the scheduling is the same
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def fitted():
    X = np.random.default_rng(0).integers(0, 256, (14, 32, 32, 3), dtype=np.uint8)
    params = {"backbone": "test_vit", "pretrained": False, "image_size": 32}
    detector = TransformalyDetector(**params, n_student_blocks=1, n_epochs=1, random_state=0)
    return detector.fit(X[:8]), X


def test_dask_array_scores_equal_serial_scores(client, fitted):
    detector, X = fitted
    images = da.from_array(X, chunks=(4, 16, 32, 3))  # split rows are joined per chunk
    scores = score_dask(detector, images)
    assert scores.chunks == ((4, 4, 4, 2),)
    result = client.compute(scores).result()
    np.testing.assert_allclose(result, detector.score_samples(X), rtol=1e-6)
    labels = client.compute(score_dask(detector, images, method="predict")).result()
    np.testing.assert_array_equal(labels, detector.predict(X))


def test_dask_bag_of_paths_scores_equal_serial_scores(client, fitted, tmp_path):
    detector, X = fitted
    paths = []
    for i, image in enumerate(X):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    scores = score_dask(detector, db.from_sequence(paths, npartitions=3))
    result = client.compute(scores).result()
    np.testing.assert_allclose(result, detector.score_samples(paths), rtol=1e-6)
    arrays = score_dask(
        detector, db.from_sequence(list(X), npartitions=2), method="decision_function"
    )
    np.testing.assert_allclose(
        client.compute(arrays).result(), detector.decision_function(X), rtol=1e-6
    )


def test_score_dask_errors(fitted):
    detector, X = fitted
    with pytest.raises(ValueError, match="method must be one of"):
        score_dask(detector, da.from_array(X), method="fit")
    with pytest.raises(ValueError, match=r"shape \(n, H, W\) or \(n, H, W, C\)"):
        score_dask(detector, da.from_array(X[0, 0]))
    with pytest.raises(TypeError, match="dask.array.Array or a dask.bag.Bag"):
        score_dask(detector, X)
    with pytest.raises(NotFittedError):
        score_dask(TransformalyDetector(), da.from_array(X))


def test_docstring_example():
    import ssad.parallel

    result = doctest.testmod(ssad.parallel, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
