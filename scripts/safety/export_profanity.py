"""Exports alt-profanity-check's scikit-learn model (TF-IDF vocabulary and
idf, five sigmoid-calibrated linear SVMs) to a small JSON file that Rust
scores without Python. Run by scripts/setup-models.sh; reads the package's
joblib files, writes OUT.json.

Scoring (what the Rust side must reproduce, as scikit-learn does):
  tokens = re.findall(r"(?u)\\b\\w\\w+\\b", text.lower()), kept if in vocab
  x_j    = count_j * idf_j, then x /= ||x||_2
  f_k    = coef_k . x + intercept_k            (k = 1..5)
  p_k    = 1 / (1 + exp(a_k * f_k + b_k))
  p      = mean_k p_k                            (probability "offensive")
"""
import json
import sys
import warnings

import joblib

warnings.simplefilter("ignore")
src, out = sys.argv[1], sys.argv[2]
vec = joblib.load(f"{src}/vectorizer.joblib")
model = joblib.load(f"{src}/model.joblib")
params = vec.get_params()
assert params["ngram_range"] == (1, 1) and params["lowercase"] and params["norm"] == "l2"
assert params["token_pattern"] == r"(?u)\b\w\w+\b" and not params["sublinear_tf"]
vocab = {w: int(i) for w, i in vec.vocabulary_.items()}
classifiers = []
for c in model.calibrated_classifiers_:
    assert c.method == "sigmoid", c.method
    est = c.estimator
    cal = c.calibrators[0]
    classifiers.append({
        "coef": [float(x) for x in est.coef_[0]],
        "intercept": float(est.intercept_[0]),
        "a": float(cal.a_),
        "b": float(cal.b_),
    })
json.dump({
    "source": "alt-profanity-check 1.9.1 (MIT)",
    "token_pattern": params["token_pattern"],
    "vocab": vocab,
    "idf": [float(x) for x in vec.idf_],
    "classifiers": classifiers,
}, open(out, "w"))
print(f"exported {len(vocab)} terms, {len(classifiers)} classifiers to {out}", file=sys.stderr)
