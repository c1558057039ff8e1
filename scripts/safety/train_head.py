#!/usr/bin/env python3
"""Trains the prompt policy's learned head: a multinomial logistic regression
from MiniLM sentence embeddings to `safe` + the six harmful categories, with
one blocking threshold per category chosen on the validation split.

    vidflow safety embed tests/data/safety_corpus/train.jsonl /tmp/emb/train.jsonl
    vidflow safety embed tests/data/safety_corpus/val.jsonl   /tmp/emb/val.jsonl
    python scripts/safety/train_head.py /tmp/emb configs/safety/head.json

(`bash scripts/safety/train-head.sh` runs all three.) Deterministic: the
solver is seeded and the inputs are sorted as written. The frozen test split
is never read here.

Thresholds: a prompt's score for a category is the highest probability over
its readings (as written, and with evasions undone). Starting from
thresholds above every benign validation prompt, the category whose next
lower step blocks the most harmful validation prompts per benign one is
lowered, while the benign prompts blocked stay within the budget
(`--fp-budget`, default 0.8% of the benign validation prompts, under the 1%
target).
"""

import argparse
import hashlib
import json
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
import sklearn

CLASSES = ["safe", "hate", "real_person", "self_harm", "sexual", "violence_gore", "weapons_extremism"]


def load(path):
    """Readings grouped into prompts: (X per reading, y per reading, prompt index per reading)."""
    xs, ys, group = [], [], []
    n = -1
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["reading"] == 0:
                n += 1
            xs.append(r["embedding"])
            ys.append(CLASSES.index(r["category"]))
            group.append(n)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys), np.asarray(group)


def per_prompt_max(p, group):
    """Highest probability per prompt over its readings, and each prompt's label row index."""
    n = group.max() + 1
    out = np.full((n, p.shape[1]), -1.0)
    first = np.full(n, -1)
    for i, g in enumerate(group):
        out[g] = np.maximum(out[g], p[i])
        if first[g] < 0:
            first[g] = i
    return out, first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("emb_dir")
    ap.add_argument("out")
    ap.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    ap.add_argument("--fp-budget", type=float, default=0.008)
    a = ap.parse_args()

    Xt, yt, _ = load(f"{a.emb_dir}/train.jsonl")
    Xv, yv, gv = load(f"{a.emb_dir}/val.jsonl")
    clf = LogisticRegression(C=a.c, max_iter=5000, class_weight="balanced", random_state=0)
    clf.fit(Xt, yt)
    assert list(clf.classes_) == list(range(len(CLASSES)))

    pv, first = per_prompt_max(clf.predict_proba(Xv), gv)
    labels = yv[first]
    benign = labels == 0
    n_benign = int(benign.sum())
    budget = int(np.floor(a.fp_budget * n_benign))
    cats = list(range(1, len(CLASSES)))
    # Candidate thresholds per category: just above each benign score, high to low.
    cand = {c: sorted(set(pv[benign, c].tolist()) | {0.5}, reverse=True) for c in cats}
    step = {c: 0 for c in cats}
    thr = {c: max(cand[c][0] + 1e-6, 0.5) for c in cats}

    def blocked(th):
        return np.any(np.stack([pv[:, c] >= th[c] for c in cats], axis=1), axis=1)

    while True:
        base = blocked(thr)
        best = None
        for c in cats:
            if step[c] + 1 >= len(cand[c]):
                continue
            t = dict(thr)
            t[c] = cand[c][step[c] + 1] + 1e-6
            b = blocked(t)
            fp = int((b & benign).sum())
            if fp > budget:
                continue
            gain = int((b & ~benign).sum() - (base & ~benign).sum())
            cost = fp - int((base & benign).sum())
            score = gain / (cost + 1)
            if best is None or score > best[0]:
                best = (score, c, t)
        if best is None or best[0] <= 0:
            break
        _, c, thr = best
        step[c] += 1

    b = blocked(thr)
    report = {
        "val_false_positive_rate": float((b & benign).sum() / max(1, n_benign)),
        "val_block_rate": {
            CLASSES[c]: float((b & (labels == c)).sum() / max(1, (labels == c).sum())) for c in cats
        },
    }
    sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
    head = {
        "format": "vidflow-safety-head/1",
        "encoder": "all-MiniLM-L6-v2",
        "classes": CLASSES,
        "weights": np.round(clf.coef_, 7).tolist(),
        "bias": np.round(clf.intercept_, 7).tolist(),
        "thresholds": {CLASSES[c]: round(float(thr[c]), 6) for c in cats},
        "trained_on": {"train_embeddings_sha256": sha(f"{a.emb_dir}/train.jsonl"),
                       "val_embeddings_sha256": sha(f"{a.emb_dir}/val.jsonl")},
        "trainer": f"scikit-learn {sklearn.__version__} LogisticRegression(C={a.c}, class_weight=balanced)",
        "validation": report,
    }
    with open(a.out, "w") as f:
        json.dump(head, f, indent=1)
        f.write("\n")
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
