-- Separation of duties: the key a promotion was requested with (whoever created it is not an
-- independent reviewer), and changes to team policies that wait for a reviewer when the
-- platform's policy for the environment says so.

ALTER TABLE promotions ADD COLUMN requested_key_id TEXT;

CREATE TABLE policy_changes (
    id TEXT PRIMARY KEY,
    team_id TEXT NOT NULL REFERENCES teams (id),
    environment TEXT NOT NULL REFERENCES environments (name),
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_key_id TEXT NOT NULL,
    requested_at BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    comment TEXT
);
CREATE INDEX policy_changes_team ON policy_changes (team_id, requested_at);
CREATE INDEX policy_changes_status ON policy_changes (status, requested_at);
