-- Incidents: opened by a firing alert, joined by the next ones on the same deployment while
-- not resolved; their timeline's own entries (the deployment's changes are read beside them).
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    deployment_id TEXT NOT NULL,
    title TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    acknowledged_at BIGINT,
    acknowledged_by TEXT,
    resolved_at BIGINT,
    resolved_by TEXT
);
CREATE INDEX incidents_team ON incidents (team_id, opened_at);
CREATE INDEX incidents_deployment ON incidents (deployment_id, state);

CREATE TABLE incident_entries (
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (incident_id, seq)
);
