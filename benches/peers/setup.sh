#!/usr/bin/env bash
# Creates the Python virtual environment for the PyTorch peer benchmark (benches/peers/moe_peer.py)
# and the Hugging Face fixtures (benches/peers/hf_fixtures.py): torch 2.9.0 from PyPI, the same
# release as the LibTorch of scripts/install-libtorch.sh, and transformers 4.57.1.
#
#   benches/peers/setup.sh [VENV]     # VENV defaults to $HOME/.cache/switch-moe/peer-venv
#   PY="$(benches/peers/setup.sh | tail -n 1)"
#   "$PY" benches/peers/moe_peer.py --tokens 2048 --d-model 256 --d-ff 1024 --experts 8 --threads 1
#
# Idempotent: a venv whose python already imports torch 2.9.0 is left as it is. The LAST line
# printed (stdout) is the venv's python; everything else goes to stderr.
#
# The Linux x86_64 torch wheel on PyPI is the CUDA 12.8 build: torch/_C loads libtorch_cuda.so,
# which links cuBLAS, cuDNN, NCCL, ... from NVIDIA's wheels, so `import torch` fails without them
# even on a CPU-only machine. They are therefore installed as ordinary dependencies (about 3 GB
# download, the venv ends up about 7 GB); torch then runs on the CPU without a GPU. The CPU-only
# wheels live on download.pytorch.org, which this project does not rely on.
#
# Needs: python3 (3.10 to 3.13) with the venv module, network access to PyPI.
set -euo pipefail

TORCH_VERSION=2.9.0
NUMPY_VERSION=2.3.4 # not needed by the benchmark; without it `import torch` warns on stderr
TRANSFORMERS_VERSION=4.57.1 # the HF fixtures: its MoE blocks still keep one nn.Linear per expert
VENV="${1:-$HOME/.cache/switch-moe/peer-venv}"
PYTHON="${PYTHON:-python3}"

log() { echo "peer-setup: $*" >&2; }

# ready VENV: whether the venv's python imports the expected torch.
ready() {
    [[ -x "$1/bin/python" ]] &&
        "$1/bin/python" -c "import sys, numpy, torch, transformers, safetensors; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION' or transformers.__version__ != '$TRANSFORMERS_VERSION')" \
            >/dev/null 2>&1
}

mkdir -p "$(dirname "$VENV")"
VENV="$(cd "$(dirname "$VENV")" && pwd -P)/$(basename "$VENV")"

if ready "$VENV"; then
    log "torch $TORCH_VERSION already installed in $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating the virtual environment $VENV ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$VENV"
fi

log "installing torch==$TORCH_VERSION, its dependencies (about 3 GB, CUDA libraries included) and numpy from PyPI"
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-cache-dir --progress-bar off \
    --only-binary=:all: "torch==$TORCH_VERSION" "numpy==$NUMPY_VERSION" \
    "transformers==$TRANSFORMERS_VERSION" safetensors >&2

if ! ready "$VENV"; then
    log "torch does not import in $VENV:"
    "$VENV/bin/python" -c "import torch" >&2 || true
    exit 1
fi
log "torch $TORCH_VERSION installed in $VENV ($(du -sh "$VENV" | cut -f1))"
echo "$VENV/bin/python"
