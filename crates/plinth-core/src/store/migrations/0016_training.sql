-- Training on the platform: recipes (versioned specs), their runs (tasks of the `training`
-- queue) and when a trigger last started one.
CREATE TABLE recipes (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams(id),
    name TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    last_triggered_at BIGINT,
    -- The dataset version the last run trained on (new-data triggers compare with it).
    last_dataset_version_id TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE recipe_versions (
    recipe_id TEXT NOT NULL REFERENCES recipes(id),
    version BIGINT NOT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (recipe_id, version)
);

CREATE TABLE training_runs (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams(id),
    recipe_id TEXT NOT NULL REFERENCES recipes(id),
    recipe_version BIGINT NOT NULL,
    trigger TEXT NOT NULL,
    steps TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL
);
CREATE INDEX training_runs_recipe ON training_runs (recipe_id, created_at);
