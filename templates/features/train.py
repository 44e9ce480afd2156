"""Trains this project's model: a LightGBM classifier of whether a flight leaves more than 15
minutes late, from the weather at its airport at its scheduled departure — the point-in-time
training set exported to train.csv (`plinth features training-set`, then `plinth query`).
Writes model.txt, the LightGBM text file Plinth registers. A feature the store had no fresh
value for is missing (empty), which LightGBM handles. Needs lightgbm and numpy."""

import csv

import lightgbm as lgb
import numpy as np

FEATURES = ["temp", "humid", "wind_speed", "precip", "visib"]
LABEL = "delayed"


def number(text):
    return float(text) if text not in ("", "NULL", "null") else float("nan")


with open("train.csv", newline="") as f:
    rows = list(csv.DictReader(f))
X = np.array([[number(r[c]) for c in FEATURES] for r in rows])
y = np.array([float(r[LABEL]) for r in rows])
params = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 50,
          "verbose": -1, "seed": 7, "deterministic": True}
booster = lgb.train(params, lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=150)
booster.save_model("model.txt")
print(f"trained on {len(rows)} flights ({int(y.sum())} late); wrote model.txt")
