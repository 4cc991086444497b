"""The README's "Your own data" table: gradflow's default on tables against
scikit-learn, on the small public tables that scikit-learn ships (no download).

For each table and each of 5 seeds, a stratified 80/20 split (plain for the
regression) is written as train.csv and test.csv; gradflow trains its default
(`gradflow train --data train.csv --test test.csv`), and scikit-learn fits
MLPClassifier/MLPRegressor (defaults, max_iter 2000) and LogisticRegression/Ridge
on standardized inputs. The mean test accuracy (or R²) over the seeds is printed
as a Markdown table.

Usage: python tools/tables/compare.py [path/to/gradflow]   (needs scikit-learn)
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

TABLES = [
    ("iris", datasets.load_iris, "classification"),
    ("wine", datasets.load_wine, "classification"),
    ("breast_cancer", datasets.load_breast_cancer, "classification"),
    ("diabetes", datasets.load_diabetes, "regression"),
]
SEEDS = range(5)
# Extra flags for gradflow (to try another recipe): GRADFLOW_EXTRA="--epochs 50".
EXTRA = os.environ.get("GRADFLOW_EXTRA", "").split()
ONLY = os.environ.get("TABLES", "").split(",") if os.environ.get("TABLES") else None


def write_csv(path, names, x, y, target):
    with open(path, "w") as f:
        f.write(",".join(list(names) + [target]) + "\n")
        for row, t in zip(x, y):
            f.write(",".join(f"{v:.6g}" for v in row) + f",{t}\n")


def gradflow_score(binary, train, test, out, task):
    subprocess.run(
        [binary, "train", "--data", str(train), "--test", str(test), "--out", str(out), "--threads", "1"]
        + EXTRA,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    s = json.loads((out / "summary.json").read_text())
    return s["test_r2"] if task == "regression" else s["test_accuracy"]


def references(task, xtr, ytr, xte, yte, seed):
    if task == "classification":
        models = {
            "MLPClassifier": MLPClassifier(max_iter=2000, random_state=seed),
            "LogisticRegression": LogisticRegression(max_iter=5000),
        }
    else:
        models = {"MLPRegressor": MLPRegressor(max_iter=2000, random_state=seed), "Ridge": Ridge()}
    return {k: make_pipeline(StandardScaler(), m).fit(xtr, ytr).score(xte, yte) for k, m in models.items()}


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/gradflow"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, load, task in TABLES:
            if ONLY and name not in ONLY:
                continue
            d = load()
            scores = {"gradflow": []}
            for seed in SEEDS:
                strat = d.target if task == "classification" else None
                xtr, xte, ytr, yte = train_test_split(
                    d.data, d.target, test_size=0.2, random_state=seed, stratify=strat
                )
                base = Path(tmp) / f"{name}{seed}"
                base.mkdir()
                target = "target"
                write_csv(base / "train.csv", d.feature_names, xtr, ytr, target)
                write_csv(base / "test.csv", d.feature_names, xte, yte, target)
                scores["gradflow"].append(gradflow_score(binary, base / "train.csv", base / "test.csv", base / "run", task))
                for k, v in references(task, xtr, ytr, xte, yte, seed).items():
                    scores.setdefault(k, []).append(v)
            rows.append((name, task, len(d.target), d.data.shape[1], {k: float(np.mean(v)) for k, v in scores.items()}))
    print("| table | rows × columns | metric | gradflow default | reference models |")
    print("|---|---|---|---|---|")
    for name, task, n, c, s in rows:
        metric = "R²" if task == "regression" else "accuracy"
        fmt = (lambda v: f"{v:.3f}") if task == "regression" else (lambda v: f"{100 * v:.1f}%")
        refs = ", ".join(f"{k} {fmt(v)}" for k, v in s.items() if k != "gradflow")
        print(f"| {name} | {n} × {c} | {metric} | {fmt(s['gradflow'])} | {refs} |")


if __name__ == "__main__":
    main()
