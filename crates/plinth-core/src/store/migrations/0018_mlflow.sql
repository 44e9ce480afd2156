-- MLflow's tracking objects, team objects like every other: experiments, their runs with
-- params, tags and metric history, MLflow 3's logged models; registered models that have no
-- version yet (a Plinth model needs its task, which the first version's artifact tells);
-- where a version registered through MLflow came from; and aliases of model versions.
CREATE TABLE mlflow_experiments (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    lifecycle TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE mlflow_runs (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    experiment_id TEXT NOT NULL REFERENCES mlflow_experiments (id),
    name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT,
    lifecycle TEXT NOT NULL,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL
);
CREATE INDEX mlflow_runs_experiment ON mlflow_runs (experiment_id, start_time);

CREATE TABLE mlflow_run_params (
    run_id TEXT NOT NULL REFERENCES mlflow_runs (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE mlflow_run_tags (
    run_id TEXT NOT NULL REFERENCES mlflow_runs (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE mlflow_metrics (
    run_id TEXT NOT NULL REFERENCES mlflow_runs (id),
    key TEXT NOT NULL,
    step BIGINT NOT NULL,
    at BIGINT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    model_id TEXT
);
-- A metric logged twice (same key, time, step and value) is one point, as in MLflow.
CREATE UNIQUE INDEX mlflow_metrics_point ON mlflow_metrics (run_id, key, step, at, value);

CREATE TABLE mlflow_logged_models (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    experiment_id TEXT NOT NULL REFERENCES mlflow_experiments (id),
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    model_type TEXT NOT NULL,
    source_run_id TEXT,
    params TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE mlflow_pending_models (
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (team_id, name)
);

CREATE TABLE mlflow_versions (
    version_id TEXT PRIMARY KEY REFERENCES model_versions (id),
    source TEXT NOT NULL,
    run_id TEXT,
    artifact_path TEXT NOT NULL
);

CREATE TABLE model_aliases (
    model_id TEXT NOT NULL REFERENCES models (id),
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    set_at BIGINT NOT NULL,
    set_by TEXT NOT NULL,
    PRIMARY KEY (model_id, alias)
);
