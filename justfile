# cifar-sweep tasks. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# The real data: the shared JPEG archive, unless CIFAR10_ARCHIVE says otherwise.
export CIFAR10_ARCHIVE := env_var_or_default("CIFAR10_ARCHIVE", if path_exists(justfile_directory() / "../shared/data/cifar10-jpeg.tar.gz") == "true" { justfile_directory() / "../shared/data/cifar10-jpeg.tar.gz" } else { "" })

default:
    @just --list

# Run a sweep file (e.g. `just sweep sweeps/lr_batch.toml`); extra flags go to `cifar-sweep run`.
sweep FILE *ARGS:
    cargo run --release -q -p sweep -- run {{FILE}} {{ARGS}}

# Comparison tables of a sweep (the latest when none is named).
report *ARGS:
    cargo run --release -q -p sweep -- report {{ARGS}}

# Charts of a sweep as PNG and SVG (the latest when none is named), in results/plots/<sweep>/.
plot *ARGS:
    cargo run --release -q -p sweep -- plot {{ARGS}}

# Exit 4 when a trial lost more than 1 point of test accuracy or fails now. Point both steps at
# another database with CIFAR_SWEEP_DB, not --db.
# Nightly regression check: run sweeps/nightly.toml as nightly-<today>, compare with the night before.
nightly *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    name="nightly-$(date +%F)"
    status=0
    cargo run --release -q -p sweep -- run sweeps/nightly.toml --name "$name" {{ARGS}} || status=$?
    if [ "$status" = 130 ]; then exit 130; fi
    # --first-ok: the first night of a database has no earlier run (any later night without one
    # is an error: the gate must not pass by comparing nothing).
    cargo run --release -q -p sweep -- compare --previous-of "$name" --first-ok
    exit "$status"

# Any cifar-sweep command, release build.
cs *ARGS:
    cargo run --release -q -p sweep -- {{ARGS}}

# The test suite (fast, deterministic; uses a slice of the real data).
test:
    cargo test --workspace

# Slow tests: many kill points, long fuzzing.
test-slow:
    cargo test --workspace -- --ignored

# CPU training/inference throughput of lenet, cnn3 and vgg6 at batch 20/64/128: candle's
# stock kernels, ours, and PyTorch (installed into .venv-bench from PyPI) on the same threads,
# plus one real-data lenet epoch both ways. Extra flags go to cifar-bench (see its --help).
bench *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x .venv-bench/bin/python ] || ! .venv-bench/bin/python -c "import torch, numpy" 2>/dev/null; then
      python3 -m venv .venv-bench
      .venv-bench/bin/pip install --quiet --disable-pip-version-check torch numpy
    fi
    cargo build --release -q -p bench
    ./target/release/cifar-bench --python .venv-bench/bin/python --epoch {{ARGS}}

fmt:
    cargo fmt --all

# Formatting, lints and tests: what CI runs.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace

# The GPU binaries for the device check (issue 15), built here, never on the GPU machine:
# `--features cuda` (CUDA 13.0 from ../shared/tools/cuda-build-env.sh, compute capability 90;
# WITH_CUDNN=1 adds cuDNN: all three convolution passes through it, kernels/cudnn.rs) into target/cuda, then cifar-sweep, cifar-bench and the trainer's
# unit tests stripped and xz-compressed into gpu-bin/ with the data archive (carry gpu-bin).
gpu-build:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo fetch -q
    source ../shared/tools/cuda-build-env.sh
    export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
    features=cuda; tfeatures=cuda
    if [ -n "${WITH_CUDNN:-}" ]; then features=cuda,trainer/cudnn; tfeatures=cuda,cudnn; fi
    cargo build --release --target-dir target/cuda -p sweep -p bench --features "$features"
    tests=$(cargo test --release --target-dir target/cuda -p trainer --lib --features "$tfeatures" --no-run \
      --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
    mkdir -p gpu-bin
    for pair in "cifar-sweep:target/cuda/release/cifar-sweep" "cifar-bench:target/cuda/release/cifar-bench" "trainer-tests:$tests"; do
      name=${pair%%:*}; path=${pair#*:}
      strip -o "gpu-bin/$name" "$path"
      xz -T2 -6 -f "gpu-bin/$name"
    done
    cp ../shared/data/cifar10-jpeg.tar.gz gpu-bin/
    du -ch gpu-bin/* | tail -1

# The one device check (issue 15), on the GPU machine with gpu-bin/ carried; report in $OUT
# (see bench/gpu_check.sh; DEVICE=cpu BIN=target/release ... dry-runs it here).
gpu-check:
    bash bench/gpu_check.sh
