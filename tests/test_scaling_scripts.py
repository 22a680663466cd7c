"""The scaling scripts of examples/ run, and the GPU check stops at once without CUDA."""

import json
import lzma
import os
import runpy
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _script(name):
    return runpy.run_path(str(EXAMPLES / name), run_name="ssad_example")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_gpu_check_stops_at_once_without_cuda(tmp_path):
    main = _script("gpu_check.py")["main"]
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        main(["--out", str(tmp_path / "gpu.json")])
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_check_stages_run_on_the_cpu_with_a_tiny_model(tmp_path):
    out, quality = tmp_path / "gpu.json", tmp_path / "reports"
    argv = ["--smoke", "--out", str(out), "--quality", "--quality-out", str(quality)]
    report = _script("gpu_check.py")["main"](argv)
    stages = report["stages"]
    assert set(stages) == {"dino_features", "transformaly_fit", "self_distill", "faiss", "loading"}
    assert stages["loading"]["images_per_s"]["2"] > 0
    assert stages["dino_features"]["images_per_s"] > 0
    assert stages["self_distill"]["n_steps"] >= 1
    assert [run["status"] for run in report["quality"]] == [0]
    assert list(quality.glob("digits_one-class_knn-pixels*.json"))
    saved = json.loads(out.read_text())
    assert saved["smoke"] is True and saved["complete"] is True and saved["n_errors"] == 0


def test_gpu_check_records_a_failed_stage_and_goes_on(tmp_path):
    script = _script("gpu_check.py")

    def broken(cfg, device):
        raise RuntimeError("CUDA out of memory")

    seen = []

    def after(cfg, device):  # the JSON on disk already holds the stages before this one
        seen.append(json.loads((tmp_path / "gpu.json").read_text()))
        return {"ok": True}

    script["STAGES"][:] = [("broken", broken), ("after", after)]  # the list main() reads
    report = script["main"](["--smoke", "--out", str(tmp_path / "gpu.json")])
    assert report["stages"]["broken"] == {"error": "RuntimeError: CUDA out of memory"}
    assert report["stages"]["after"] == {"ok": True} and report["n_errors"] == 1
    assert seen[0]["complete"] is False and "broken" in seen[0]["stages"]


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_gpu_device_script_unpacks_its_kit_and_runs_the_check(tmp_path):
    kit = tmp_path / "kit"
    (kit / "fashion-mnist").mkdir(parents=True)
    probe = tmp_path / "kit_probe.py"
    probe.write_text("FROM_THE_KIT = True\n")
    with tarfile.open(kit / "site.tar.xz", "w:xz") as tar:
        tar.add(probe, arcname="kit_probe.py")
    with lzma.open(kit / "fashion-mnist" / "train-labels-idx1-ubyte.xz", "wb") as f:
        f.write(b"idx bytes")
    out, site, fmnist = tmp_path / "out", tmp_path / "site", tmp_path / "fmnist"
    env = {
        **os.environ,
        "GPU_KIT": str(kit),
        "GPU_KIT_SITE": str(site),
        "FASHION_MNIST": str(fmnist),
        "PYTHON": sys.executable,
        "GPU_CHECK_ARGS": "--smoke",
        "GPU_KIT_MODULES": "kit_probe faiss",  # must import, from the kit or the environment
    }
    script = EXAMPLES / "gpu_device.sh"
    done = subprocess.run(
        ["bash", str(script), str(out), "240"], cwd=EXAMPLES.parent, env=env, timeout=300
    )
    assert done.returncode == 0, (out / "log.txt").read_text()
    assert (site / "kit_probe.py").exists()
    assert (fmnist / "train-labels-idx1-ubyte").read_bytes() == b"idx bytes"
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["complete"] is True and report["n_errors"] == 0
    with tarfile.open(out / "quality.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("quality/digits_one-class_knn-pixels") for n in names)
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "log.txt", "quality.tar.gz"]


def test_scaling_benchmarks_run_at_a_small_size(tmp_path, monkeypatch):
    out = tmp_path / "scaling.json"
    argv = ["scaling_benchmarks.py", "all", "--no-real", "--ivf-flat", "--n-train", "3000"]
    argv += ["--n-queries", "50", "--n-images", "6", "--jpeg-size", "32", "--out", str(out)]
    argv += ["--patchcore-n-train", "3", "--patchcore-n-test", "2", "--patchcore-one-pass"]
    argv += ["--patchcore-calibration", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setenv("SSAD_CACHE", str(tmp_path))  # the converted Lite0 weights
    _script("scaling_benchmarks.py")["main"]()
    report = json.loads(out.read_text())
    rows = report["knn"][0]["rows"]
    assert [row["index"] for row in rows] == ["flat (exact)", "ivf (float32)"] + [
        label for label, _ in _script("scaling_benchmarks.py")["KNN_CONFIGS"]
    ]
    assert [row.get("compression") for row in rows] == [None, None, "pq", "pq", "sq8", "sq8"]
    assert all(0.0 <= row["recall"] <= 1.0 for row in rows)
    assert set(report["loading"]["images_per_s"]) == {"0", "1", "2"}
    assert set(report["loading"]["decode_only_images_per_s"]) == {"1", "2"}
    patchcore = {(row["model"], row["n_train"]): row for row in report["patchcore"]}
    models = ("coreset", "brute", "coreset-one-pass", "coreset-calibration")
    assert set(patchcore) == {(m, n) for m in models for n in (3, 12)}
    # The coreset bank keeps its size as the training set grows; brute force keeps every patch.
    assert (
        patchcore["coreset", 3]["memory_bank_rows"] == patchcore["coreset", 12]["memory_bank_rows"]
    )
    assert patchcore["brute", 12]["memory_bank_rows"] == patchcore["brute", 12]["n_patches_fit"]
    assert patchcore["coreset-calibration", 12]["n_calibration"] == 2
    assert patchcore["coreset", 12]["n_calibration"] == 12
    # A pool that holds every training patch gives a bank of the same size.
    assert (
        patchcore["coreset-one-pass", 12]["memory_bank_rows"]
        == patchcore["coreset", 12]["memory_bank_rows"]
    )


def test_gpu_check_quality_runs_are_runner_commands(tmp_path):
    from ssad.benchmarks import available_estimators, available_presets
    from ssad.benchmarks.__main__ import build_parser

    script = _script("gpu_check.py")
    for argv in script["QUALITY"]:
        args = build_parser().parse_args(argv)
        assert args.preset in available_presets() or args.estimator in available_estimators()
    tiny = [["--dataset", "digits", "--estimator", "knn-pixels", "--classes", "0"]] * 2
    done = script["quality_runs"](str(tmp_path), budget_s=0.0, runs=tiny)
    assert done[0]["status"] == 0 and done[1]["status"] == "skipped: budget spent"
    # a run the runner refuses (its error exit) is recorded, and the next one runs
    bad = [["--dataset", "no-such-set", "--estimator", "knn-pixels"], tiny[0]]
    done, seen = [], []
    script["quality_runs"](
        str(tmp_path), 1e9, bad, done=done, on_run=lambda: seen.append(done[-1]["status"])
    )
    assert done[0]["status"] == "error: exit 2" and done[1]["status"] == 0
    assert seen == ["running", "error: exit 2", "running", 0]  # on record before each run ends
    assert list(tmp_path.glob("digits_one-class_knn-pixels*.json"))
