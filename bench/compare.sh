#!/usr/bin/env bash
# Train the same models with the same protocol in gradflow and PyTorch, in one
# run on one machine, and print a markdown comparison.
#
#   pip install -r bench/requirements.txt     # torch + numpy (once)
#   bench/compare.sh                          # ~12 minutes on 2 cores
#
# Protocol, both sides: MNIST normalized (mean 0.1307, std 0.3081), softmax
# cross-entropy, Adam lr 1e-3 (torch defaults otherwise), a new shuffle every
# epoch, the last partial batch dropped, 2 threads. Epoch 1 is a warm-up;
# epochs 2..EPOCHS are timed (training loop only) and the median is reported.
#
# GFLOP/s counts the matrix products of forward and backward (Linear layers and
# the im2col products of Conv2d), per sample:
#   forward 2·in·out, backward dW 2·in·out, backward dX 2·in·out
#   except for the first layer, whose input needs no gradient.
# Element-wise work, the loss and the optimizer are not counted.
#
# Environment: EPOCHS (default 4), THREADS (default 2), ROWS (space-separated
# row ids to run, default all), SKIP_RSS=1 to skip the memory section,
# PYTHON (default python3), GRADFLOW_DATA (default data/mnist), TORCH_WAIT_POLICIES
# (default "default PASSIVE", see below), CARGO_TARGET_DIR.
set -euo pipefail
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EPOCHS="${EPOCHS:-4}"
THREADS="${THREADS:-2}"
PYTHON="${PYTHON:-python3}"
DATA="${GRADFLOW_DATA:-$ROOT/data/mnist}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/gradflow"
ALL_ROWS="mlp128_b64 mlp800_b32 mlp800_b128 mlp1024x2_b128 lenet5_b64"
ROWS="${ROWS:-$ALL_ROWS}"
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
# PyTorch trains each row once per OpenMP wait policy in TORCH_WAIT_POLICIES and is
# credited with the faster: its default (threads spin while they wait) makes small steps
# fast on an idle machine (784-128-10 batch 64: 0.46 s/epoch, against 1.5-1.9 s with
# OMP_WAIT_POLICY=PASSIVE), but spinning threads lose badly when other work shares the
# cores, where PASSIVE wins.
TORCH_WAIT_POLICIES="${TORCH_WAIT_POLICIES:-default PASSIVE}"

if ! "$PYTHON" -c "import torch, numpy" 2>/dev/null; then
    echo "compare.sh: PyTorch and numpy are needed: pip install -r bench/requirements.txt" >&2
    exit 1
fi
if ! (( EPOCHS >= 2 )); then
    echo "compare.sh: EPOCHS must be at least 2 (epoch 1 is the warm-up)" >&2
    exit 1
fi

echo "building gradflow (release)..." >&2
cargo build --release -q -p gradflow-cli
cargo bench -q -p gradflow --bench kernels --no-run 2>/dev/null

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gradflow-compare.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------- models
write_mlp() { # file widths...
    local file=$1; shift
    { echo "input = [1, 28, 28]"; echo; echo "[[layer]]"; echo 'type = "Flatten"'
      local widths=("$@") i
      for ((i = 1; i < ${#widths[@]}; i++)); do
          echo; echo "[[layer]]"; echo 'type = "Linear"'; echo "out_features = ${widths[$i]}"
          if ((i + 1 < ${#widths[@]})); then echo; echo "[[layer]]"; echo 'type = "ReLU"'; fi
      done; } > "$file"
}
write_mlp "$WORK/mlp128.toml" 784 128 10
write_mlp "$WORK/mlp800.toml" 784 800 10
write_mlp "$WORK/mlp1024x2.toml" 784 1024 1024 10

# row id -> "label|gradflow model|torch model|batch|matrix-product FLOPs per sample"
flops_mlp() { # widths... -> forward + backward FLOPs per sample
    local widths=("$@") i total=0
    for ((i = 0; i + 1 < ${#widths[@]}; i++)); do
        local p=$((2 * widths[i] * widths[i + 1]))
        total=$((total + 2 * p))                   # forward + dW
        ((i > 0)) && total=$((total + p))          # dX (not for the first layer)
    done
    echo $total
}
# LeNet-5: conv1 6x28x28 outputs x 25 taps; conv2 16x10x10 outputs x 150 taps; then 400-120-84-10.
LENET_FLOPS=$(( 2*(2*6*784*25) + 3*(2*16*100*150) + $(flops_mlp 400 120 84 10) + 2*400*120 ))
row_info() {
    case "$1" in
        mlp128_b64)     echo "784-128-10 ReLU, batch 64|$WORK/mlp128.toml|mlp-128|64|$(flops_mlp 784 128 10)" ;;
        mlp800_b32)     echo "784-800-10, batch 32|$WORK/mlp800.toml|mlp-800|32|$(flops_mlp 784 800 10)" ;;
        mlp800_b128)    echo "784-800-10, batch 128|$WORK/mlp800.toml|mlp-800|128|$(flops_mlp 784 800 10)" ;;
        mlp1024x2_b128) echo "784-1024-1024-10, batch 128|$WORK/mlp1024x2.toml|mlp-1024x2|128|$(flops_mlp 784 1024 1024 10)" ;;
        lenet5_b64)     echo "LeNet-5, batch 64|lenet5|lenet5|64|$LENET_FLOPS" ;;
        *) echo "compare.sh: unknown row $1 (rows: $ALL_ROWS)" >&2; exit 1 ;;
    esac
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# ---------------------------------------------------------------- GEMM peak
# Measured before and after the training rows; the higher figure is the peak (on a
# shared machine the speed drifts, and the higher figure is the stricter yardstick).
measure_peak() {
    local py gf
    py=$("$PYTHON" bench/torch_bench.py --threads "$THREADS" peak --n 2048)
    gf=$(RAYON_NUM_THREADS="$THREADS" cargo bench -q -p gradflow --bench kernels -- --peak 2048 2>/dev/null | grep gradflow_gflops)
    printf '%s\n%s\n' "$py" "$gf" | "$PYTHON" -c "
import json, sys
d = {}
for line in sys.stdin:
    d.update(json.loads(line))
print(round(d['torch_gflops'], 1), round(d['numpy_gflops'], 1), round(d['gradflow_gflops'], 1))"
}
echo "measuring the single-precision GEMM peak (2048x2048x2048)..." >&2
peaks=$(measure_peak)
read -r torch_peak numpy_peak gradflow_peak <<< "$peaks"
[[ -n "${gradflow_peak:-}" ]] || { echo "compare.sh: the GEMM peak could not be measured" >&2; exit 1; }

# ---------------------------------------------------------------- training rows
ROWS_TSV="$WORK/rows.tsv"
: > "$ROWS_TSV"
for row in $ROWS; do
    IFS='|' read -r label gf_model torch_model batch flops <<< "$(row_info "$row")"
    echo "training $label ($EPOCHS epochs each side)..." >&2
    run="$WORK/run-$row"
    "$BIN" train --model "$gf_model" --epochs "$EPOCHS" --batch-size "$batch" --optimizer adam --lr 1e-3 \
        --schedule constant --threads "$THREADS" --diagnostics-every 0 --drop-last --seed 0 \
        --limit-test 1000 --data "$DATA" --out "$run" > "$run.log"
    gf=$("$PYTHON" -c "
import json, sys
rows = [json.loads(l) for l in open('$run/metrics.jsonl')]
for r in rows[1:]:
    print(r['samples_per_second'])" | median)
    tr=0 policy=
    for p in $TORCH_WAIT_POLICIES; do
        t=$(if [[ "$p" == default ]]; then unset OMP_WAIT_POLICY; else export OMP_WAIT_POLICY="$p"; fi
            "$PYTHON" bench/torch_bench.py --threads "$THREADS" --data "$DATA" train --model "$torch_model" \
                --batch "$batch" --epochs "$EPOCHS" | "$PYTHON" -c "
import json, sys
rows = [json.loads(l) for l in sys.stdin]
for r in rows[1:]:
    print(r['samples_per_second'])" | median)
        if awk -v t="$t" -v best="$tr" 'BEGIN { exit !(t > best) }'; then tr=$t policy=$p; fi
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$batch" "$gf" "$tr" "$flops" "$policy" >> "$ROWS_TSV"
done

echo "measuring the GEMM peak again..." >&2
peaks=$(measure_peak)
read -r torch_peak2 numpy_peak2 gradflow_peak2 <<< "$peaks"
[[ -n "${gradflow_peak2:-}" ]] || { echo "compare.sh: the GEMM peak could not be measured" >&2; exit 1; }
PEAK=$(printf '%s\n' "$torch_peak" "$numpy_peak" "$gradflow_peak" "$torch_peak2" "$numpy_peak2" "$gradflow_peak2" | sort -g | tail -1)

# The samples of one epoch: 60,000 training images, the last partial batch dropped.
TABLE="$WORK/table.md"
{
    echo "| model | gradflow samples/s | PyTorch samples/s | ratio | gradflow s/epoch | PyTorch s/epoch | gradflow GFLOP/s | % of GEMM peak |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
} > "$TABLE"
TARGETS="$WORK/targets.md"
policies=""
: > "$TARGETS"
while IFS=$'\t' read -r label batch gf tr flops policy; do
    policies="${policies:+$policies, }$label: $policy"
    awk -v label="$label" -v batch="$batch" -v gf="$gf" -v tr="$tr" -v flops="$flops" -v peak="$PEAK" \
        -v table="$TABLE" -v targets="$TARGETS" 'BEGIN {
        g = gf * flops / 1e9
        n = int(60000 / batch) * batch
        printf "| %s | %.0f | %.0f | %.2f× | %.2f | %.2f | %.1f | %.0f%% |\n", label, gf, tr, gf / tr, n / gf, n / tr, g, 100 * g / peak >> table
        printf "- %s: %.2f× PyTorch (target ≥ 1.5×): %s\n", label, gf / tr, (gf / tr >= 1.5 ? "met" : "NOT met") >> targets
        if (label ~ /1024-1024/)
            printf "- %s: %.0f%% of the GEMM peak (target ≥ 70%%): %s\n", label, 100 * g / peak, (100 * g / peak >= 70 ? "met" : "NOT met") >> targets
    }'
done < "$ROWS_TSV"

# ---------------------------------------------------------------- report
echo
echo "## gradflow vs PyTorch, $(date -u +%Y-%m-%d)"
echo
family=$(sed -n 's/^cpu family[[:space:]]*: *//p' /proc/cpuinfo | head -1)
avx512=$(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)
echo "- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1) (CPU family $family, AVX-512: $avx512), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- gradflow $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty'), $(rustc --version); PyTorch $("$PYTHON" -c 'import torch; print(torch.__version__)'), numpy $("$PYTHON" -c 'import numpy; print(numpy.__version__)')"
echo "- protocol: Adam lr 1e-3, cross-entropy, shuffle each epoch, drop last partial batch, $THREADS threads (PyTorch: the faster of OMP_WAIT_POLICY ${TORCH_WAIT_POLICIES// / and } for each row); median samples/s of epochs 2..$EPOCHS (epoch 1 = warm-up)"
echo "- PyTorch's faster OpenMP wait policy, row by row: $policies"
echo "- GEMM peak (f32, 2048³, best of 5–7, measured before / after the rows): PyTorch $torch_peak / $torch_peak2, numpy $numpy_peak / $numpy_peak2, gradflow $gradflow_peak / $gradflow_peak2 GFLOP/s → peak = $PEAK GFLOP/s"
echo "- GFLOP/s = forward + backward matrix-product FLOPs (forward 2·N·in·out per Linear / im2col conv, backward dW the same, dX the same except the first layer, whose input needs no gradient) × samples/s"
echo
cat "$TABLE"
echo
cat "$TARGETS"

if [[ "${SKIP_RSS:-0}" != 1 ]]; then
    echo
    echo "### Peak memory (RSS) of the default run"
    echo
    echo "gradflow: \`gradflow train\` (784-800-10, batch 128, Adam, cosine, 5 epochs, diagnostics every 50 steps); PyTorch: the same model and schedule (\`torch_bench.py default-run\`)."
    echo
    fifo="$WORK/fifo"
    mkfifo "$fifo"
    /usr/bin/time -v -o "$WORK/gf.time" "$BIN" train --threads "$THREADS" --data "$DATA" --out "$WORK/default" > "$fifo" &
    tpid=$!
    gf_epochs=()
    while IFS= read -r line; do
        if [[ "$line" == epoch* ]]; then
            gpid=$(pgrep -P "$tpid" | head -1 || true)
            rss=$(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$gpid/status" 2>/dev/null || true)
            if [[ "$rss" =~ ^[0-9]+$ ]]; then gf_epochs+=("$rss"); fi
        fi
    done < "$fifo"
    wait "$tpid"
    gf_max=$(awk '/Maximum resident set size/ {printf "%.0f", $NF / 1024}' "$WORK/gf.time")
    /usr/bin/time -v -o "$WORK/torch.time" "$PYTHON" bench/torch_bench.py --threads "$THREADS" --data "$DATA" \
        default-run > "$WORK/torch-default.jsonl"
    torch_epochs=$("$PYTHON" -c "
import json
rows = [json.loads(l) for l in open('$WORK/torch-default.jsonl')]
print(' / '.join(str(round(r['rss_mib'])) for r in rows if 'epoch' in r))")
    torch_max=$(awk '/Maximum resident set size/ {printf "%.0f", $NF / 1024}' "$WORK/torch.time")
    echo "| | peak RSS (MiB) | RSS after each epoch (MiB) |"
    echo "| --- | ---: | --- |"
    echo "| gradflow | $gf_max | $(IFS=/; echo "${gf_epochs[*]}" | sed 's|/| / |g') |"
    echo "| PyTorch | $torch_max | $torch_epochs |"
    echo
    awk -v g="$gf_max" -v t="$torch_max" 'BEGIN {
        if (!(t > 0)) { print "- peak RSS: not measured"; exit }
        printf "- peak RSS: gradflow %.2f× PyTorch (target ≤ 1.5×): %s\n", g / t, (g <= 1.5 * t ? "met" : "NOT met") }'
    printf '%s\n' "${gf_epochs[@]}" | awk '{ v[NR] = $1 } END {
        if (NR == 0 || !(v[1] > 0)) { print "- gradflow RSS over the epochs: not read"; exit }
        lo = v[1]; hi = v[1]; for (i in v) { if (v[i] < lo) lo = v[i]; if (v[i] > hi) hi = v[i] }
        printf "- gradflow RSS over the epochs: %d to %d MiB (%+.1f%% from the first epoch to the last)\n", lo, hi, 100 * (v[NR] - v[1]) / v[1] }'
fi
