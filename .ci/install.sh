#!/usr/bin/env bash
# Installs everything pointset needs on a fresh Debian/Ubuntu machine, from scratch:
# the system library Open3D loads, the CPU build of PyTorch, torch-cluster (compiled from
# source against that torch), and the project with every extra (``all`` includes ``gpu``:
# triton, whose kernels the tests run on CPU through Triton's interpreter).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null
fi

python -m pip install -q --upgrade pip
# Torch first: a bare 'torch' requirement would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
# torch-cluster is source-only on PyPI; build it against the torch installed above.
if ! python -c "import torch_cluster" >/dev/null 2>&1; then
    python -m pip install -q --no-build-isolation torch-cluster
fi
python -m pip install -q -e ".[all,dev]"
# Optional: pytorch3d has no Linux wheel on PyPI. A CPU build for exactly this Python and
# torch may sit in the shared folder beside the checkout; without it the pytorch3d tests skip.
WHEELS="$(cd .. && pwd)/shared/wheels"
if compgen -G "$WHEELS/pytorch3d-*.whl" >/dev/null \
    && python -c "import sys, torch; sys.exit(sys.version_info[:2] != (3, 11) or torch.__version__.split('+')[0] != '2.13.0')"; then
    python -m pip install -q --no-deps "$WHEELS"/pytorch3d-*.whl
    python -m pip install -q iopath
fi
