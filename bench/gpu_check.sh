#!/usr/bin/env bash
# The one prepared device check of issue 15. It builds nothing: it runs binaries built
# beforehand (`just gpu-build` puts stripped, xz-compressed `--features cuda` builds and the
# data archive into gpu-bin/) and writes a Markdown report, gpu_check.md, with the raw files
# beside it, into $OUT (default: results/gpu-check).
#
#   (a) the device parity tests: every layer op against candle's CPU op, forward and both
#       gradients, odd shapes and batch 1, in fp32/tf32/bf16 (`trainer-tests parity_`);
#   (b) cifar-bench side by side with PyTorch: lenet, cnn3, vgg6 at batch 20/64/128 in
#       fp32/tf32/bf16 (training and inference images per second);
#   (c) one real vgg6 epoch at batch 64, both sides (cifar-bench --epoch), and the real
#       training loop (`cifar-sweep train`, one epoch with validation and test);
#   (d) nvidia-smi sampled every 200 ms while (b) and (c) run, summarised per measurement.
#
# On the device machine (one call; the binaries carried, nothing compiled there; the steps'
# time limits add up to 590 s, inside one 600-second call):
#   bash bench/gpu_check.sh                      # device cuda:0, $OUT from the device tool
# Dry run here, on the CPU, with the CPU build and a small grid:
#   DEVICE=cpu BIN=target/release MODELS=lenet BATCHES=20 PRECISIONS=fp32,bf16 TIME=0.3 \
#     PYTHON=.venv-bench/bin/python bash bench/gpu_check.sh
# Environment: DEVICE (cuda:0), BIN (gpu-bin), OUT, MODELS (lenet,cnn3,vgg6), BATCHES
# (20,64,128), PRECISIONS (fp32,tf32,bf16), TIME (seconds per measurement, 1), PYTHON
# (python3), ARCHIVE (the data archive; default: $BIN's copy, else ../shared/data's),
# EPOCH_MODEL (vgg6: the model of the real epochs in (c)).
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda:0}
BIN=${BIN:-gpu-bin}
OUT=${OUT:-results/gpu-check}
MODELS=${MODELS:-lenet,cnn3,vgg6}
BATCHES=${BATCHES:-20,64,128}
PRECISIONS=${PRECISIONS:-fp32,tf32,bf16}
TIME=${TIME:-1}
PYTHON=${PYTHON:-python3}
EPOCH_MODEL=${EPOCH_MODEL:-vgg6}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.md"
WORK=$(mktemp -d)
# (Only a set PID is killed: `kill 0` would signal this whole process group.)
trap '[ -n "${SMI_PID:-}" ] && kill "$SMI_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

# Unpack the carried binaries (xz) into the scratch folder; plain binaries are used as they are.
for name in cifar-sweep cifar-bench trainer-tests; do
  if [ -f "$BIN/$name.xz" ]; then
    # xz where the machine has it, Python's lzma module otherwise.
    { xz -dc "$BIN/$name.xz" 2>/dev/null ||
      "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$BIN/$name.xz"; } >"$WORK/$name"
    chmod +x "$WORK/$name"
  elif [ -x "$BIN/$name" ]; then
    ln -s "$(realpath "$BIN/$name")" "$WORK/$name"
  fi
done
if [ ! -x "$WORK/trainer-tests" ]; then
  # A CPU dry run: the newest trainer unit-test binary of the CPU build.
  t=$(ls -t target/release/deps/trainer-* target/debug/deps/trainer-* 2>/dev/null | grep -v '\.d$' | head -1)
  [ -n "$t" ] && ln -s "$(realpath "$t")" "$WORK/trainer-tests"
fi
for name in cifar-sweep cifar-bench trainer-tests; do
  [ -x "$WORK/$name" ] || { echo "gpu_check: no $name in $BIN (run \`just gpu-build\` first)" >&2; exit 2; }
done
ARCHIVE=${ARCHIVE:-$( [ -f "$BIN/cifar10-jpeg.tar.gz" ] && echo "$BIN/cifar10-jpeg.tar.gz" || echo ../shared/data/cifar10-jpeg.tar.gz )}
[ -f "$ARCHIVE" ] || { echo "gpu_check: no data archive at $ARCHIVE" >&2; exit 2; }
export CIFAR10_ARCHIVE=$(realpath "$ARCHIVE")
if [ "$DEVICE" != cpu ]; then
  # candle's cuda build loads CUDA 13's cuBLAS, cuRAND, cudart and NVRTC at run time: the
  # PyTorch installation's copies (nvidia/cu13/lib) serve.
  # A cudnn build also loads libcudnn.so.9: PyTorch's (nvidia/cudnn/lib).
  NV=$("$PYTHON" -c 'import nvidia; print(nvidia.__path__[0])' 2>/dev/null || true)
  [ -n "$NV" ] && export LD_LIBRARY_PATH="$NV/cu13/lib:$NV/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

{
  echo "# Device check ($(date -u '+%F %T UTC'))"
  echo
  echo "Device \`$DEVICE\`; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(nproc) CPUs."
  echo
  if command -v nvidia-smi >/dev/null; then
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    echo '```'
  fi
  echo "PyTorch: $("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())' 2>&1 | tail -1)"
  echo
} >"$REPORT"

STATUS=0
step() { echo "== $*" >&2; }

# (a) parity tests
step "(a) parity tests"
if [ "$DEVICE" = cpu ]; then req=0; else req=1; fi
CIFAR_SWEEP_REQUIRE_CUDA=$req CIFAR_SWEEP_TEST_DEVICE=$DEVICE \
  timeout 120 "$WORK/trainer-tests" parity_ --test-threads 1 >"$OUT/parity.log" 2>&1
rc=$?
[ $rc = 0 ] || STATUS=1
{
  echo "## (a) Parity tests (exit $rc)"
  echo
  echo '```'
  grep -E '^test |test result|panicked|differs' "$OUT/parity.log" | head -40
  echo '```'
  echo
} >>"$REPORT"

# (d) utilisation sampling for (b) and (c)
if command -v nvidia-smi >/dev/null && [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw \
    --format=csv,noheader,nounits -lms 200 >"$OUT/smi.csv" 2>/dev/null &
  SMI_PID=$!
fi

# (b) side by side
step "(b) cifar-bench"
timeout 360 "$WORK/cifar-bench" --device "$DEVICE" --models "$MODELS" --batches "$BATCHES" \
  --precisions "$PRECISIONS" --impls fast,torch --time "$TIME" --python "$PYTHON" \
  --epoch --epoch-models "$EPOCH_MODEL" --epoch-batch 64 --data-dir "$WORK/data" \
  --markdown "$OUT/bench.md" --json "$OUT/bench.json" >"$OUT/bench.log" 2>&1
rc=$?
[ $rc = 0 ] || STATUS=1
{
  echo "## (b) Training and inference throughput, and (c) one real $EPOCH_MODEL epoch at batch 64 (exit $rc)"
  echo
  if [ -f "$OUT/bench.md" ]; then cat "$OUT/bench.md"; else tail -20 "$OUT/bench.log"; fi
  echo
} >>"$REPORT"

# (c) the real training loop: one vgg6 epoch at batch 64, validation and test included
step "(c) cifar-sweep train"
timeout 110 "$WORK/cifar-sweep" train --name "gpu-check-$EPOCH_MODEL" -s arch="$EPOCH_MODEL" \
  -s batch_size=64 -s epochs=1 -s lr=0.01 --device "$DEVICE" --db "$WORK/results.db" \
  --checkpoint-dir "$WORK/checkpoints" --data-dir "$WORK/data" >"$OUT/train.log" 2>&1
rc=$?
[ $rc = 0 ] || STATUS=1
{
  echo "## (c) The real loop: \`cifar-sweep train\`, $EPOCH_MODEL, batch 64, 1 epoch (exit $rc)"
  echo
  echo '```'
  grep -E 'epoch 1:|done|error|Error' "$OUT/train.log" | sed -E 's/^[0-9T:.-]+Z +//' | head -10
  echo '```'
  echo
} >>"$REPORT"

if [ -n "${SMI_PID:-}" ]; then
  kill "$SMI_PID" 2>/dev/null
  wait "$SMI_PID" 2>/dev/null
  step "(d) utilisation"
  {
    echo "## (d) GPU utilisation while each measurement ran (nvidia-smi, every 200 ms)"
    echo
    "$PYTHON" bench/gpu_util.py "$OUT/smi.csv" "$OUT/bench.json" 2>&1
    echo
  } >>"$REPORT"
fi
echo "gpu_check: report in $REPORT (status $STATUS)" >&2
cat "$REPORT"
exit $STATUS
