"""The ``ssad`` command: fit on a folder, score a folder into CSV, list, benchmark, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ssad
from ssad.cli import build_parser, main
from ssad.datasets import make_anomaly_images


def _write_pngs(folder: Path, images: np.ndarray, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = folder / f"{prefix}{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    X, _ = make_anomaly_images(70, 6, image_size=16, random_state=0)
    _write_pngs(tmp_path / "train", X[:40])
    _write_pngs(tmp_path / "val", X[40:60])
    _write_pngs(tmp_path / "test" / "good", X[60:70])
    _write_pngs(tmp_path / "test" / "bad", X[70:], prefix="bad")
    return {name: tmp_path / name for name in ("train", "val", "test")}


def test_fit_then_score_writes_one_row_per_image(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, out = tmp_path / "model.ssad", tmp_path / "scores.csv"
    params = '{"knn__n_neighbors": 3}'
    argv = ["fit", "knn-pixels", str(folders["train"]), "-o", str(model), "--params", params]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert ssad.load(model)[-1].n_neighbors == 3  # the safe format, parameters set
    assert main(["score", str(model), str(folders["test"]), "--csv", str(out)]) == 0
    assert capsys.readouterr().out.startswith("Scored 16 images (")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "score", "p_value", "label"]
    assert len(rows) == 16  # one per image, sorted by path: bad/ before good/
    assert [Path(r["path"]).parent.name for r in rows] == ["bad"] * 6 + ["good"] * 10
    p = np.array([float(r["p_value"]) for r in rows])
    assert np.all((p > 0) & (p <= 1))
    assert {r["label"] for r in rows[:6]} == {"anomaly"}  # the texture patches
    scores = np.array([float(r["score"]) for r in rows])
    assert scores[:6].max() < scores[6:].min()
    # without --csv the table goes to standard output
    assert main(["score", str(model), str(folders["test"] / "good")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "path,score,p_value,label"


def test_fit_with_a_validation_folder_sets_the_threshold(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    model = tmp_path / "model.ssad"
    argv = ["fit", "gaussian-pixels", str(folders["train"]), "-o", str(model)]
    assert main([*argv, "--val-dir", str(folders["val"]), "--fpr", "0.05"]) == 0
    det = ssad.load(model)
    val_scores = det.score_samples(str(folders["val"]))
    np.testing.assert_allclose(det[-1].calibration_scores_, val_scores)
    assert det[-1].offset_ == np.sort(val_scores)[0]  # floor(0.05 * 21) = 1


def test_usage_errors_exit_2(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tmp_path / "m.ssad")
    for argv, message in [
        (["fit", "nope", str(folders["train"]), "-o", model], "unknown estimator 'nope'"),
        (["fit", "knn-pixels", str(folders["train"]), "-o", model, "--params", "{"], "--params"),
        (["fit", "knn-pixels", str(folders["train"]), "-o", model, "--params", "[1]"], "object"),
        (["fit", "knn-pixels", str(folders["train"]), "-o", model, "--fpr", "0.1"], "together"),
        (["fit", "knn-pixels", str(folders["train"])], "-o/--output"),
        (
            [
                "fit",
                "knn-pixels",
                str(folders["train"]),
                "-o",
                model,
                "--val-dir",
                "v",
                "--fpr",
                "2",
            ],
            "--fpr must be in (0, 1)",
        ),
        (["frobnicate"], "invalid choice"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        usage = "usage: ssad fit " if argv[0] == "fit" else "usage: ssad "
        assert message in err and err.startswith(usage)


def test_failures_exit_1_with_one_line(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    model = tmp_path / "model.ssad"
    cases = [
        (["fit", "knn-pixels", str(tmp_path / "empty"), "-o", str(model)], "TRAIN_DIR is the"),
        (["fit", "knn-pixels", str(tmp_path / "nowhere"), "-o", str(model)], "does not exist"),
        (["score", str(tmp_path / "missing.ssad"), str(folders["test"])], "missing.ssad"),
    ]
    (tmp_path / "junk.ssad").write_bytes(b"\x80\x04not a model")
    cases.append((["score", str(tmp_path / "junk.ssad"), str(folders["test"])], "junk.ssad"))
    for argv, message in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"ssad {argv[0]}: error: ")
        assert message in err
    assert not model.exists()


def test_pickles_only_with_trust_pickle(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    from ssad.benchmarks import make_estimator

    model = tmp_path / "model.pkl"
    model.write_bytes(pickle.dumps(make_estimator("knn-pixels").fit(str(folders["train"]))))
    assert main(["score", str(model), str(folders["test"])]) == 1
    assert "pickle" in capsys.readouterr().err
    assert main(["score", str(model), str(folders["test"]), "--trust-pickle"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 17
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"neither")
    assert main(["score", str(junk), str(folders["test"]), "--trust-pickle"]) == 1
    assert "Nor is it a pickle" in capsys.readouterr().err


def test_list_help_and_benchmark(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert "efficientnet-knn" in listed and "knn-pixels" in listed
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ssad ") and all(c in out for c in ("fit", "score", "benchmark"))
    assert build_parser().parse_args(["score", "m", "d", "-v"]).verbose
    assert build_parser().parse_args(["-v", "score", "m", "d"]).verbose
    assert not build_parser().parse_args(["score", "m", "d"]).verbose
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    assert capsys.readouterr().out.startswith("usage: ssad benchmark")
    with pytest.raises(SystemExit) as exc:
        main(["-v", "benchmark", "--dataset", "digits"])
    assert exc.value.code == 2 and "put 'benchmark' first" in capsys.readouterr().err
    argv = ["benchmark", "--dataset", "digits", "--classes", "0", "--max-test", "60", "--quiet"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.json"))) == 1
