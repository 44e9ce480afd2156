-- Data sources of a team (local files and folders, PostgreSQL tables and queries), and grants
-- of them to other teams.

CREATE TABLE sources (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (team_id, name)
);

CREATE TABLE source_grants (
    source_id TEXT NOT NULL REFERENCES sources (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (source_id, team_id)
);
