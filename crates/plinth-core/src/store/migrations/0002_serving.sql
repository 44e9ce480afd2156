-- Serving: environments, deployments with their full revision history, and grants.

CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
INSERT INTO environments (name, description, created_at, created_by) VALUES
    ('staging', 'Pre-production: integration tests and reviews', 0, 'system'),
    ('production', 'Serves product traffic', 0, 'system');

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    model_id TEXT NOT NULL REFERENCES models (id),
    environment TEXT NOT NULL REFERENCES environments (name),
    revision BIGINT NOT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    UNIQUE (model_id, environment)
);
CREATE INDEX deployments_team ON deployments (team_id, environment);

CREATE TABLE deployment_revisions (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    revision BIGINT NOT NULL,
    action TEXT NOT NULL,
    spec TEXT NOT NULL,
    at BIGINT NOT NULL,
    by_id TEXT NOT NULL,
    PRIMARY KEY (deployment_id, revision)
);

CREATE TABLE deployment_grants (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (deployment_id, team_id)
);
