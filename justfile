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

# Any cifar-sweep command, release build.
cs *ARGS:
    cargo run --release -q -p sweep -- {{ARGS}}

# The test suite (fast, deterministic; uses a slice of the real data).
test:
    cargo test --workspace

# Slow tests: many kill points, long fuzzing.
test-slow:
    cargo test --workspace -- --ignored

fmt:
    cargo fmt --all

# Formatting, lints and tests: what CI runs.
check:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo test --workspace
