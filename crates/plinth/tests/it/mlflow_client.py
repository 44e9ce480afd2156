"""The real `mlflow` client against Plinth: track a run, log and register a LightGBM model
trained here on the Adult data, set an alias, load the model back by alias and predict.

Run by the Rust test `mlflow::the_mlflow_client_*` with MLFLOW_TRACKING_URI pointing at Plinth,
MLFLOW_TRACKING_TOKEN a Plinth API key, and argv: the Adult CSV, the registered model's name,
the experiment's name. Prints one JSON line of what it saw, for the test to check against
Plinth's own API.
"""

import json
import sys

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

FEATURES = ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week", "sex_male"]

data_path, model_name, experiment = sys.argv[1], sys.argv[2], sys.argv[3]
frame = pd.read_csv(data_path)
X = frame[FEATURES].astype("float64").iloc[:4000]
y = frame["income_gt_50k"].astype(int).iloc[:4000]

major = int(mlflow.__version__.split(".")[0])
mlflow.set_experiment(experiment)
params = {"objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "verbose": -1}
with mlflow.start_run(run_name="adult-lgbm") as run:
    mlflow.log_params({"num_leaves": 15, "learning_rate": 0.1, "rounds": 30})
    booster = lgb.train(params, lgb.Dataset(X, label=y), num_boost_round=30)
    scores = booster.predict(X)
    for step, k in enumerate([10, 20, 30]):
        mlflow.log_metric("train_accuracy", float(((booster.predict(X, num_iteration=k) > 0.5) == y).mean()), step=step)
    mlflow.set_tag("team.purpose", "income")
    signature = infer_signature(X, scores)
    where = {"name": "model"} if major >= 3 else {"artifact_path": "model"}
    info = mlflow.lightgbm.log_model(booster, signature=signature, registered_model_name=model_name, **where)

client = MlflowClient()
versions = client.search_model_versions(f"name='{model_name}'")
version = max(int(v.version) for v in versions)
client.set_registered_model_alias(model_name, "champion", str(version))
by_alias = client.get_model_version_by_alias(model_name, "champion")

loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
rows = X.iloc[:20]
predicted = np.asarray(loaded.predict(rows), dtype=float).ravel()
fetched = client.get_run(run.info.run_id)

print(json.dumps({
    "mlflow": mlflow.__version__,
    "experiment_id": run.info.experiment_id,
    "run_id": run.info.run_id,
    "version": version,
    "alias_version": int(by_alias.version),
    "rows": rows.values.tolist(),
    "lightgbm": booster.predict(rows).tolist(),
    "loaded": predicted.tolist(),
    "params": fetched.data.params,
    "metrics": fetched.data.metrics,
    "history": [m.value for m in client.get_metric_history(run.info.run_id, "train_accuracy")],
    "model_uri": info.model_uri,
}))
