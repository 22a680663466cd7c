"""ssad.save / ssad.load: round trips, and files crafted to run code."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline

import ssad
from ssad import (
    CosineKernelScorer,
    FilteredFit,
    GaussianScorer,
    GMMOutlierFilter,
    KMeansScorer,
    KNNScorer,
    TimmFeatures,
)


def _round_trip(estimator, tmp_path, **load_kwargs):
    path = tmp_path / "model.ssad"
    ssad.save(estimator, path)
    return ssad.load(path, **load_kwargs)


def test_timm_features_knn_pipeline_round_trip(tmp_path, rgb_images):
    pipe = make_pipeline(
        TimmFeatures("test_vit", pretrained=False, image_size=32, device="cpu"),
        KNNScorer(n_neighbors=2),
    ).fit(rgb_images[:8])
    restored = _round_trip(pipe, tmp_path)
    assert type(restored) is type(pipe) and [n for n, _ in restored.steps] == [
        "timmfeatures",
        "knnscorer",
    ]
    np.testing.assert_array_equal(
        restored.score_samples(rgb_images), pipe.score_samples(rgb_images)
    )
    assert restored.predict(rgb_images).tolist() == pipe.predict(rgb_images).tolist()
    feats, original = restored[0], pipe[0]
    assert isinstance(feats.model_, torch.nn.Module) and feats.device_ == torch.device("cpu")
    assert feats.preprocessor_ == original.preprocessor_
    for key, tensor in original.model_.state_dict().items():
        torch.testing.assert_close(feats.model_.state_dict()[key], tensor, rtol=0, atol=0)
    assert original.model_ is not None  # saving does not touch the live estimator


@pytest.mark.parametrize("variance", [0.9, None])
def test_gaussian_scorer_round_trip(tmp_path, variance):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6)) @ rng.normal(size=(6, 6))
    scorer = GaussianScorer(variance=variance).fit(X)
    restored = _round_trip(scorer, tmp_path)
    X_new = rng.normal(size=(20, 6))
    np.testing.assert_array_equal(restored.score_samples(X_new), scorer.score_samples(X_new))
    np.testing.assert_array_equal(restored.mahalanobis(X_new), scorer.mahalanobis(X_new))
    assert restored.get_params() == scorer.get_params()
    assert restored.offset_ == scorer.offset_


@pytest.mark.parametrize(
    "estimator",
    [
        KNNScorer(metric="cosine", n_neighbors=3),
        KMeansScorer(random_state=0),
        GMMOutlierFilter(random_state=0),
        CosineKernelScorer(),
        FilteredFit(GMMOutlierFilter(random_state=0), KMeansScorer(random_state=0)),
        make_pipeline(PCA(3), GaussianScorer()),
    ],
    ids=lambda e: type(e).__name__,
)
def test_any_scorer_round_trips_without_per_class_code(tmp_path, estimator):
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(size=(60, 5)), rng.normal(5.0, 1.0, size=(30, 5))])
    estimator.fit(X)
    restored = _round_trip(estimator, tmp_path)
    np.testing.assert_array_equal(restored.score_samples(X), estimator.score_samples(X))


def test_unfitted_estimator_round_trip(tmp_path):
    estimator = TimmFeatures("test_vit", pretrained=False, image_size=(32, 48), layers=[-1])
    restored = _round_trip(estimator, tmp_path)
    assert restored.get_params() == estimator.get_params()


class Holder(BaseEstimator):
    """An estimator outside ssad and sklearn holding every kind of data the format stores."""

    def __init__(self, payload=None):
        self.payload = payload


def _payload():
    shared = [1, 2]
    return {
        "floats": [1.5, float("nan"), float("inf"), -float("inf"), -0.0],
        "ints": (0, -3, 2**70, True, None),
        "int_keys": {1: "a", (2, 3): "b"},
        "sets": (frozenset({1, 2}), {"x"}),
        "scalars": [np.float32(0.25), np.int64(-7), np.bool_(True), np.str_("s")],
        "dtypes": [np.dtype("<f8"), np.dtype(">i2")],
        "arrays": [
            np.arange(6, dtype=">i4").reshape(2, 3),
            np.array(["a", "bc"]),
            np.array(["x", 1, None], dtype=object),
            np.zeros((0, 3)),
            np.asfortranarray(np.arange(6.0).reshape(2, 3)),
            np.array(3.0),
        ],
        "tensors": [torch.arange(4, dtype=torch.bfloat16), torch.nn.Parameter(torch.ones(2))],
        "torch": [torch.device("cpu"), torch.float16],
        "misc": [Path("a/b.png"), slice(1, None, 2), np.random.RandomState(3)],
        "shared": (shared, shared),
    }


def test_generic_state_round_trip_and_trusted_classes(tmp_path):
    estimator = Holder(_payload())
    path = tmp_path / "holder.ssad"
    ssad.save(estimator, path)
    with pytest.raises(ValueError, match=r"class .*Holder, which is not allowed.*trusted="):
        ssad.load(path)
    out = ssad.load(path, trusted=[Holder]).payload
    expected = _payload()
    assert out["floats"][0] == 1.5 and np.isnan(out["floats"][1])
    assert out["floats"][2:4] == [float("inf"), -float("inf")]
    assert np.copysign(1.0, out["floats"][4]) == -1.0
    assert out["ints"] == expected["ints"] and type(out["ints"][3]) is bool
    assert out["int_keys"] == expected["int_keys"] and out["sets"] == expected["sets"]
    for got, want in zip(out["scalars"], expected["scalars"]):
        assert type(got) is type(want) and got == want
    assert out["dtypes"] == expected["dtypes"]
    for got, want in zip(out["arrays"], expected["arrays"]):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.flags.f_contiguous == want.flags.f_contiguous  # BLAS rounds by layout
        assert got.flags.writeable
        np.testing.assert_array_equal(got, want)
    assert out["tensors"][0].dtype == torch.bfloat16
    assert torch.equal(out["tensors"][0], expected["tensors"][0])
    assert isinstance(out["tensors"][1], torch.nn.Parameter)
    assert out["torch"] == expected["torch"]
    assert out["misc"][:2] == expected["misc"][:2]
    assert out["misc"][2].randint(1000) == expected["misc"][2].randint(1000)
    assert out["shared"][0] is out["shared"][1]  # shared references stay shared


def test_save_refuses_what_it_cannot_store_and_says_where(tmp_path):
    pipe = make_pipeline(PCA(2), Holder(payload={"f": lambda x: x}))
    with pytest.raises(TypeError, match=r"estimator\.steps\[1\]\[1\]\.payload\['f'\].*function"):
        ssad.save(pipe, tmp_path / "x.ssad")
    with pytest.raises(TypeError, match=r"torch module \(Linear\).*TorchStateMixin"):
        ssad.save(Holder(payload=torch.nn.Linear(2, 2)), tmp_path / "x.ssad")
    with pytest.raises(TypeError, match=r"type os\._Environ.*pickle"):
        ssad.save(Holder(payload=os.environ), tmp_path / "x.ssad")
    assert not (tmp_path / "x.ssad").exists()


# ------------------------------------------------------------------ crafted files


def _write_crafted(path, tree, tensors=None):
    metadata = {"format": "ssad", "format_version": "1", "tree": json.dumps(tree)}
    save_file(tensors or {}, path, metadata=metadata)
    return path


def _object(cls, state_items):
    return {"$": "object", "class": cls, "state": {"$": "dict", "items": state_items}}


@pytest.mark.parametrize(
    "cls",
    [
        "os:system",
        "posix:system",
        "subprocess:Popen",
        "builtins:eval",
        "sklearn.utils._testing:TempMemmap",  # a sklearn class, not an estimator
        "ssad.base:resolve_device",  # an ssad function
        "ssad.backbones:PretrainedWeightsUnavailableError",
        "ssad.scoring._knn:np.lib.npyio.DataSource",  # reaches outside through an attribute
        "ssad.benchmarks.__main__:main",
    ],
)
def test_crafted_class_is_refused_and_runs_nothing(tmp_path, cls):
    marker = tmp_path / "marker"
    command = f"touch {marker}"
    tree = _object(cls, [["args", command], ["cmd", command]])
    path = _write_crafted(tmp_path / "evil.ssad", tree)
    with pytest.raises(ValueError, match=r"Refused to load .*evil\.ssad.*not allowed"):
        ssad.load(path)
    assert not marker.exists()


class _Payload:
    """Unpickling it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"model\.pkl.*ssad model file"):
        ssad.load(path)
    assert not marker.exists()


def test_pickle_bytes_inside_the_file_stay_data(tmp_path):
    marker = tmp_path / "marker"
    blob = pickle.dumps(_Payload(marker))
    raw = torch.frombuffer(bytearray(blob), dtype=torch.uint8)
    tree = {
        "$": "list",
        "items": [
            blob.decode("latin1"),
            {"$": "ndarray", "key": "t0", "dtype": "|u1", "shape": [len(blob)]},
        ],
    }
    path = _write_crafted(tmp_path / "inside.ssad", tree, {"t0": raw})
    text, array = ssad.load(path)
    assert array.tobytes() == blob and text.encode("latin1") == blob
    assert not marker.exists()


@pytest.mark.parametrize(
    ("tree", "match"),
    [
        ({"$": "ndarray", "key": "t0", "dtype": "|O8", "shape": [1]}, "not plain data"),
        ({"$": "ndarray", "key": "t0", "dtype": "<f8", "shape": [10**6]}, "bytes for the shape"),
        ({"$": "ndarray", "key": "t9", "dtype": "|u1", "shape": [8]}, "file lacks"),
        ({"$": "npscalar", "dtype": "V8", "hex": "00" * 8}, "not plain data"),
        ({"$": "torch.dtype", "v": "load"}, "not a torch dtype"),
        ({"$": "ref", "id": 5}, "unknown entry"),
        ({"$": "code", "v": "print(1)"}, "unknown kind"),
        ({"$": "float", "v": "1e400"}, "float"),
    ],
)
def test_malformed_entries_are_refused(tmp_path, tree, match):
    path = _write_crafted(tmp_path / "bad.ssad", tree, {"t0": torch.zeros(8, dtype=torch.uint8)})
    with pytest.raises(ValueError, match=match):
        ssad.load(path)


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"])
def test_not_a_model_file_is_a_value_error(tmp_path, content):
    path = tmp_path / "model.ssad"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.ssad.*ssad model file"):
        ssad.load(path)


def test_missing_file_and_bad_trusted(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ssad.load(tmp_path / "missing.ssad")
    path = tmp_path / "m.ssad"
    ssad.save(KNNScorer(), path)
    with pytest.raises(TypeError, match="'trusted' parameter of load"):
        ssad.load(path, trusted=["os.system"])
    with pytest.raises(TypeError, match=r"e\.g\. \[KNNScorer\]"):
        ssad.load(path, trusted=KNNScorer)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ssad.save(KNNScorer(), tmp_path / "no" / "such" / "m.ssad")


def test_pickle_still_works_for_trusted_files(rgb_images):
    scorer = GaussianScorer().fit(np.random.default_rng(0).normal(size=(30, 4)))
    restored = pickle.loads(pickle.dumps(scorer))
    np.testing.assert_array_equal(restored.location_, scorer.location_)


def test_docstring_examples():
    import doctest

    import ssad._io

    result = doctest.testmod(ssad._io, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
