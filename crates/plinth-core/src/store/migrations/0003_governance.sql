-- Governance: datasets, durable jobs (evaluations), policies, promotions and their reviews,
-- webhooks and their delivery log.

CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE dataset_versions (
    id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    version BIGINT NOT NULL,
    format TEXT NOT NULL,
    artifact_key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    row_count BIGINT NOT NULL,
    profile TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (dataset_id, version)
);

-- Durable jobs: queued and running jobs are picked up again after a restart.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    params TEXT NOT NULL,
    result TEXT,
    error TEXT,
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
CREATE INDEX jobs_status ON jobs (status, created_at);

CREATE TABLE evaluations (
    id TEXT PRIMARY KEY REFERENCES jobs (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    model_id TEXT NOT NULL REFERENCES models (id),
    version BIGINT NOT NULL,
    dataset_version_id TEXT NOT NULL REFERENCES dataset_versions (id),
    created_at BIGINT NOT NULL
);
CREATE INDEX evaluations_model ON evaluations (model_id, version, created_at);

CREATE TABLE policies (
    scope TEXT NOT NULL,
    environment TEXT NOT NULL REFERENCES environments (name),
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (scope, environment)
);

CREATE TABLE promotions (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    model_id TEXT NOT NULL REFERENCES models (id),
    version BIGINT NOT NULL,
    environment TEXT NOT NULL REFERENCES environments (name),
    status TEXT NOT NULL,
    risk_tier TEXT NOT NULL,
    canary_weight BIGINT,
    evaluation_id TEXT,
    checks TEXT NOT NULL,
    required_reviewers BIGINT NOT NULL,
    auto_approved TEXT,
    note TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    decided_at BIGINT,
    deployment_revision BIGINT
);
CREATE INDEX promotions_model ON promotions (model_id, environment, requested_at);
CREATE INDEX promotions_status ON promotions (status, requested_at);

CREATE TABLE promotion_reviews (
    promotion_id TEXT NOT NULL REFERENCES promotions (id),
    reviewer_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    comment TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX promotion_reviews_promotion ON promotion_reviews (promotion_id, at);

ALTER TABLE deployment_revisions ADD COLUMN promotion_id TEXT;

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    deleted_at BIGINT
);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id),
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_status_code BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
