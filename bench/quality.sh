#!/usr/bin/env bash
# The training quality bar (issue: "Train and sample real language models"), on tinyshakespeare,
# char-level: nanoGPT's baby-GPT configuration, a Llama of the same parameter count (809,856) and an
# LSTM, 2000 iterations each.  Prints each run's final JSON line (val loss, tokens/s, seconds).  Takes
# about 20-35 minutes on 2 cores.  Each run replaces the previous one in its --out-dir (--overwrite).
#   bash bench/quality.sh [--backend numba]
set -euo pipefail
cd "$(dirname "$0")/.."
data=../shared/data/tinyshakespeare.txt
out=${OUT:-/tmp/npllm-quality}
npllm train --data "$data" --n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 \
    --lr 1e-3 --dropout 0 --max-iters 2000 --eval-interval 250 --eval-iters 50 \
    --out-dir "$out/gpt" --overwrite --no-progress "$@" | tail -n 1
npllm train --model llama --intermediate-size 345 --data "$data" --n-layer 4 --n-head 4 --n-embd 128 \
    --block-size 64 --batch-size 12 --lr 1e-3 --max-iters 2000 --eval-interval 250 --eval-iters 50 \
    --out-dir "$out/llama" --overwrite --no-progress "$@" | tail -n 1
npllm train --model lstm --data "$data" --hidden-size 256 --block-size 64 --batch-size 32 \
    --max-iters 2000 --eval-interval 250 --eval-iters 50 --out-dir "$out/lstm" --overwrite --no-progress "$@" | tail -n 1
