#!/usr/bin/env bash
# Reproduce the README's accuracy table: each published MNIST row, trained with
# a fixed seed on all cores. Results land in runs/accuracy-*/summary.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p gradflow-cli
g=./target/release/gradflow
$g train --model mlp --epochs 20 --optimizer sgd --lr 0.05 --momentum 0.9 --nesterov --schedule cosine --seed 0 --out runs/accuracy-mlp
$g train --model lenet5 --epochs 15 --optimizer sgd --lr 0.05 --momentum 0.9 --nesterov --schedule cosine --batch-size 128 --seed 0 --out runs/accuracy-lenet5
$g train --model mlp3 --epochs 30 --optimizer sgd --lr 0.05 --momentum 0.9 --nesterov --schedule cosine --max-norm 3 --seed 0 --out runs/accuracy-mlp3
$g train --model lstm --epochs 10 --seed 0 --out runs/accuracy-lstm
for r in mlp lenet5 mlp3 lstm; do
  python3 -c "import json,sys; s=json.load(open('runs/accuracy-$r/summary.json')); print('$r', 'test error %.2f%%' % (100*(1-s['test_accuracy'])), 'train seconds %.0f' % s['train_seconds'], 'epochs', s['epochs'])"
done
