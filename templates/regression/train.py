"""Trains this project's model: a LightGBM regressor of the log sale price of houses in Ames,
Iowa (data/train.csv), written to model.txt, the LightGBM text file Plinth registers. Prints the
holdout's RMSE (in log price) and R², so you know what you upload. Needs lightgbm and numpy."""

import csv

import lightgbm as lgb
import numpy as np

FEATURES = ["Lot_Area", "Year_Built", "Gr_Liv_Area", "Full_Bath", "Bedroom_AbvGr", "Garage_Cars"]
LABEL = "log_price"


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    X = np.array([[float(r[c]) for c in FEATURES] for r in rows])
    y = np.array([float(r[LABEL]) for r in rows])
    return X, y


X, y = load("data/train.csv")
params = {"objective": "regression", "num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 20,
          "verbose": -1, "seed": 7, "deterministic": True}
booster = lgb.train(params, lgb.Dataset(X, y, feature_name=FEATURES), num_boost_round=300)
booster.save_model("model.txt")
Xh, yh = load("data/holdout.csv")
err = booster.predict(Xh) - yh
rmse = float(np.sqrt(np.mean(err ** 2)))
r2 = 1 - float(np.sum(err ** 2) / np.sum((yh - yh.mean()) ** 2))
print(f"holdout RMSE {rmse:.3f} (log price), R2 {r2:.3f}; wrote model.txt")
