#!/usr/bin/env python3
"""Trains the prompt policy's learned head: a multinomial logistic regression
from two views of a prompt reading to `safe` + the six harmful categories,
with one blocking threshold per category chosen on the validation split.

The two views:
- the MiniLM sentence embedding (meaning: paraphrases land close);
- character 2- to 5-grams inside word boundaries, tf-idf weighted and
  l2-normalised (form: misspellings and word pieces the encoder's
  vocabulary splits oddly still share most of their grams).

    vidflow safety embed tests/data/safety_corpus/train.jsonl /tmp/emb/train.jsonl
    vidflow safety embed tests/data/safety_corpus/val.jsonl   /tmp/emb/val.jsonl
    python scripts/safety/train_head.py /tmp/emb configs/safety/head.json

(`bash scripts/safety/train-head.sh` runs all three.) Deterministic: the
solver is seeded and the inputs are read in file order. The frozen test
split is never read here.

The gram features are computed by `grams()` below and, at run time, by
operators/job/src/safety/head.rs; the head file carries probe texts with
the gram part of their scores so the Rust test can check the two agree.

Thresholds: a prompt's score for a category is the highest probability over
its readings (as written, and with evasions undone). Starting from
thresholds above every benign validation prompt, the category whose next
lower step blocks the most harmful validation prompts per benign one is
lowered, while the benign prompts blocked stay within the budget
(`--fp-budget`, default 0.6% of the benign validation prompts, leaving room
under the 1% target for the term and pattern layer).
"""

import argparse
import hashlib
import json
import math
import re
import sys
from collections import Counter

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.linear_model import LogisticRegression

CLASSES = ["safe", "hate", "real_person", "self_harm", "sexual", "violence_gore", "weapons_extremism"]
NGRAM = (2, 5)
WS = re.compile(r"\s+")


def grams(text):
    """Character n-grams of each word padded with one space each side; a
    word shorter than n yields itself once (padded) and no longer grams."""
    out = []
    for w in WS.sub(" ", text.lower()).strip().split(" "):
        if not w:
            continue
        w = " " + w + " "
        chars = list(w)
        for n in range(NGRAM[0], NGRAM[1] + 1):
            if len(chars) <= n:
                out.append(w)
                break
            out.extend("".join(chars[i:i + n]) for i in range(len(chars) - n + 1))
    return out


def load(path):
    """Readings in file order: texts, embeddings, class per reading, prompt
    index per reading, whether the written rules block the reading's prompt."""
    texts, xs, ys, group, rules = [], [], [], [], []
    n = -1
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["reading"] == 0:
                n += 1
            texts.append(r["text"])
            xs.append(r["embedding"])
            ys.append(CLASSES.index(r["category"]))
            group.append(n)
            rules.append(bool(r.get("rules_block", False)))
    return texts, np.asarray(xs, dtype=np.float64), np.asarray(ys), np.asarray(group), np.asarray(rules)


class Grams:
    def __init__(self, texts, min_df):
        df = Counter()
        for t in texts:
            df.update(set(grams(t)))
        self.vocab = sorted(g for g, c in df.items() if c >= min_df)
        self.index = {g: i for i, g in enumerate(self.vocab)}
        n = len(texts)
        self.idf = np.array([math.log((1 + n) / (1 + df[g])) + 1.0 for g in self.vocab])

    def features(self, text):
        """(indices, values): sublinear tf times idf, l2-normalised."""
        counts = Counter(self.index[g] for g in grams(text) if g in self.index)
        idx = sorted(counts)
        val = np.array([(1.0 + math.log(counts[i])) * self.idf[i] for i in idx])
        norm = math.sqrt(float((val ** 2).sum())) or 1.0
        return idx, val / norm

    def matrix(self, texts):
        rows, cols, vals = [], [], []
        for r, t in enumerate(texts):
            idx, val = self.features(t)
            rows += [r] * len(idx)
            cols += idx
            vals += val.tolist()
        return sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(self.vocab)))


def per_prompt_max(p, group):
    """Highest probability per prompt over its readings, and each prompt's first reading."""
    n = group.max() + 1
    out = np.full((n, p.shape[1]), -1.0)
    first = np.full(n, -1)
    for i, g in enumerate(group):
        out[g] = np.maximum(out[g], p[i])
        if first[g] < 0:
            first[g] = i
    return out, first


def choose_thresholds(pv, labels, budget_frac, rules):
    """Per-category thresholds on top of what the written rules already
    block (`rules`, per prompt): the budget is for the whole decision."""
    benign = labels == 0
    budget = int(np.floor(budget_frac * benign.sum()))
    cats = list(range(1, len(CLASSES)))
    open_benign = benign & ~rules
    cand = {c: sorted(set(pv[open_benign, c].tolist()) | {0.5}, reverse=True) for c in cats}
    step = {c: 0 for c in cats}
    thr = {c: max(cand[c][0] + 1e-6, 0.5) for c in cats}

    def blocked(th):
        return rules | np.any(np.stack([pv[:, c] >= th[c] for c in cats], axis=1), axis=1)

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
    return thr, blocked(thr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("emb_dir")
    ap.add_argument("out")
    ap.add_argument("--c", type=float, default=10.0, help="inverse regularisation strength")
    ap.add_argument("--embedding-scale", type=float, default=0.5,
                    help="weight of the embedding view against the (unit-length) gram view")
    ap.add_argument("--min-df", type=int, default=3, help="grams seen in fewer training readings are dropped")
    ap.add_argument("--fp-budget", type=float, default=0.006)
    a = ap.parse_args()

    tt, Et, yt, _, _ = load(f"{a.emb_dir}/train.jsonl")
    tv, Ev, yv, gv, rv = load(f"{a.emb_dir}/val.jsonl")
    g = Grams(tt, a.min_df)
    Xt = sp.hstack([g.matrix(tt), sp.csr_matrix(Et * a.embedding_scale)]).tocsr()
    Xv = sp.hstack([g.matrix(tv), sp.csr_matrix(Ev * a.embedding_scale)]).tocsr()
    clf = LogisticRegression(C=a.c, max_iter=5000, class_weight="balanced", random_state=0)
    clf.fit(Xt, yt)
    assert list(clf.classes_) == list(range(len(CLASSES)))

    pv, first = per_prompt_max(clf.predict_proba(Xv), gv)
    labels = yv[first]
    rules = rv[first]
    thr, b = choose_thresholds(pv, labels, a.fp_budget, rules)
    benign = labels == 0
    cats = range(1, len(CLASSES))
    rate = lambda m, c: round(float((m & (labels == c)).sum() / max(1, (labels == c).sum())), 5)
    report = {
        "val_prompts": int(len(labels)),
        "val_false_positive_rate": round(float((b & benign).sum() / max(1, benign.sum())), 5),
        "val_block_rate": {CLASSES[c]: rate(b, c) for c in cats},
        "val_rules_alone": {"false_positive_rate": round(float((rules & benign).sum() / max(1, benign.sum())), 5),
                            "block_rate": {CLASSES[c]: rate(rules, c) for c in cats}},
    }
    V = len(g.vocab)
    W = clf.coef_
    # Probes: the gram part of the logits for a few training texts, for the
    # Rust implementation's parity test.
    probes = []
    for t in tt[:: max(1, len(tt) // 8)][:8]:
        idx, val = g.features(t)
        probes.append({"text": t, "gram_logits": [round(float(W[k, idx] @ val), 6) for k in range(len(CLASSES))]})
    sha = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()
    head = {
        "format": "vidflow-safety-head/2",
        "encoder": "all-MiniLM-L6-v2",
        "classes": CLASSES,
        "grams": {"min": NGRAM[0], "max": NGRAM[1], "vocabulary": g.vocab,
                  "idf": [round(float(x), 6) for x in g.idf]},
        "embedding_scale": a.embedding_scale,
        "layers": [{"weights": [[float(f"{x:.6g}") for x in row] for row in W],
                    "bias": [round(float(x), 7) for x in clf.intercept_], "activation": "softmax"}],
        "thresholds": {CLASSES[c]: round(float(thr[c]), 6) for c in cats},
        "probes": probes,
        "trained_on": {"train_embeddings_sha256": sha(f"{a.emb_dir}/train.jsonl"),
                       "val_embeddings_sha256": sha(f"{a.emb_dir}/val.jsonl")},
        "trainer": f"scikit-learn {sklearn.__version__} LogisticRegression(C={a.c}, class_weight=balanced); "
                   f"grams {NGRAM[0]}-{NGRAM[1]} min_df={a.min_df} ({V}); embedding scale {a.embedding_scale}",
        "validation": report,
    }
    with open(a.out, "w") as f:
        json.dump(head, f, separators=(",", ":"))
        f.write("\n")
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
