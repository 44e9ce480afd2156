"""Trains this project's model: a LightGBM classifier of data/train.csv (does a person earn
over $50K?), written to model.txt, the LightGBM text file Plinth registers. `sex` and `race`
are not features: they are kept for the fairness evaluation. Prints the holdout's ROC AUC, so
you know what you upload. Needs lightgbm and numpy."""

import csv

import lightgbm as lgb
import numpy as np

FEATURES = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
LABEL = "income_gt_50k"


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    X = np.array([[float(r[c]) for c in FEATURES] for r in rows])
    y = np.array([float(r[LABEL]) for r in rows])
    return X, y


def roc_auc(y, p):
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    positives = y == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return (ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


X, y = load("data/train.csv")
params = {"objective": "binary", "num_leaves": 31, "learning_rate": 0.05, "min_data_in_leaf": 40,
          "verbose": -1, "seed": 7, "deterministic": True}
booster = lgb.train(params, lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=200)
booster.save_model("model.txt")
Xh, yh = load("data/holdout.csv")
print(f"holdout ROC AUC {roc_auc(yh, booster.predict(Xh)):.3f}; wrote model.txt")
