-- Served predictions kept for their labels: one row per answered request, written in batches
-- by the replica that served it: its rows' predicted classes or values and, for classifiers
-- that give them, their probabilities (`classes` per row), as comma-separated text.
CREATE TABLE monitored_predictions (
    deployment_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    at BIGINT NOT NULL,
    rows_count BIGINT NOT NULL,
    classes BIGINT NOT NULL,
    predicted TEXT NOT NULL,
    scores TEXT,
    PRIMARY KEY (deployment_id, request_id)
);
CREATE INDEX monitored_predictions_at ON monitored_predictions (deployment_id, at);

-- The caller's own prediction ids, for the requests that gave them (the first prediction under
-- an id keeps it).
CREATE TABLE prediction_ids (
    deployment_id TEXT NOT NULL,
    prediction_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, prediction_id)
);

-- Ground truth: the latest label of each predicted row.
CREATE TABLE prediction_labels (
    deployment_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    label DOUBLE PRECISION NOT NULL,
    labelled_at BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, request_id, row_index)
);

-- Served traffic summarized for drift, minute by minute, one row per replica and version:
-- each feature's (and the prediction's) mergeable summary.
CREATE TABLE drift_minutes (
    deployment_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    minute BIGINT NOT NULL,
    replica TEXT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (deployment_id, version, minute, replica)
);

-- How a deployment is monitored (baseline, drift tests, rules), set by its maintainers.
CREATE TABLE monitoring_settings (
    deployment_id TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);

-- The latest drift scores of each deployment, for `/metrics` on every replica.
CREATE TABLE drift_latest (
    deployment_id TEXT PRIMARY KEY,
    scores TEXT NOT NULL,
    at BIGINT NOT NULL
);

-- Rules are no longer only the SLA's: an alert keeps what its rule said.
ALTER TABLE alert_states ADD COLUMN summary TEXT;
ALTER TABLE alert_states ADD COLUMN severity TEXT;
ALTER TABLE alert_states ADD COLUMN threshold TEXT;
