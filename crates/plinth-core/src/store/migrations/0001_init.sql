-- Portable schema (SQLite and PostgreSQL): TEXT and BIGINT columns only; times are microseconds
-- since the Unix epoch; JSON documents are TEXT.

CREATE TABLE teams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE principals (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    email TEXT,
    platform_role TEXT,
    owner_team_id TEXT REFERENCES teams (id),
    created_at BIGINT NOT NULL,
    created_by TEXT
);

CREATE TABLE memberships (
    team_id TEXT NOT NULL REFERENCES teams (id),
    principal_id TEXT NOT NULL REFERENCES principals (id),
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, principal_id)
);
CREATE INDEX memberships_principal ON memberships (principal_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    principal_id TEXT NOT NULL REFERENCES principals (id),
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX api_keys_principal ON api_keys (principal_id, created_at);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    team_id TEXT,
    action TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    object_name TEXT NOT NULL,
    summary TEXT NOT NULL,
    request_id TEXT
);
CREATE INDEX audit_log_team_at ON audit_log (team_id, at, id);
CREATE INDEX audit_log_at ON audit_log (at, id);

CREATE TABLE models (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    name TEXT NOT NULL,
    task TEXT NOT NULL,
    description TEXT NOT NULL,
    owners TEXT NOT NULL,
    latest_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    archived_at BIGINT,
    UNIQUE (team_id, name)
);

CREATE TABLE model_tags (
    model_id TEXT NOT NULL REFERENCES models (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);
CREATE INDEX model_tags_key ON model_tags (key, value);

CREATE TABLE model_versions (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL REFERENCES models (id),
    team_id TEXT NOT NULL REFERENCES teams (id),
    version BIGINT NOT NULL,
    description TEXT NOT NULL,
    format TEXT NOT NULL,
    artifact_key TEXT NOT NULL,
    artifact_filename TEXT NOT NULL,
    artifact_size BIGINT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    format_details TEXT NOT NULL,
    signature TEXT NOT NULL,
    signature_source TEXT NOT NULL,
    card TEXT NOT NULL,
    lineage TEXT NOT NULL,
    approval_state TEXT NOT NULL,
    approved_at BIGINT,
    approved_by TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    archived_at BIGINT,
    UNIQUE (model_id, version)
);
CREATE INDEX model_versions_format ON model_versions (model_id, format);
