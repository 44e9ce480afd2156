-- Silences: matching alerts (by model, environment, rule; unset matches all) notify nothing
-- until `ends_at`, while their state changes as always.
CREATE TABLE alert_silences (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    model TEXT,
    environment TEXT,
    rule TEXT,
    ends_at BIGINT NOT NULL,
    comment TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX alert_silences_team ON alert_silences (team_id, ends_at);
