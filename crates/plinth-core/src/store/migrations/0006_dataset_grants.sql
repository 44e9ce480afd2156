-- Teams may let other teams read their datasets (SQL and training sets).

CREATE TABLE dataset_grants (
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (dataset_id, team_id)
);
