-- The feature store: entities, feature views (with their freshness), feature services.

CREATE TABLE entities (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    join_keys TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE feature_views (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    entity_id TEXT NOT NULL REFERENCES entities (id),
    spec TEXT NOT NULL,
    public BIGINT NOT NULL,
    watermark BIGINT,
    last_event BIGINT,
    last_materialized_at BIGINT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE feature_services (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    features TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (team_id, name)
);
