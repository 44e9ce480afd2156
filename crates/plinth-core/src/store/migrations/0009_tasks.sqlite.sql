-- SQLite: rebuild jobs as tasks (team_id nullable, new columns); runs with foreign keys off
-- (the runner checks them before committing). Renaming first makes evaluations reference tasks.
ALTER TABLE jobs RENAME TO tasks;
CREATE TABLE tasks_new (
    id TEXT PRIMARY KEY,
    team_id TEXT REFERENCES teams (id),
    kind TEXT NOT NULL,
    queue TEXT NOT NULL,
    priority BIGINT NOT NULL,
    state TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    progress_note TEXT,
    args TEXT NOT NULL,
    result TEXT,
    error TEXT,
    errors TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    scheduled_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    cancel_requested BIGINT NOT NULL,
    schedule_id TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT
);
INSERT INTO tasks_new (id, team_id, kind, queue, priority, state, progress, progress_note, args, result, error, errors,
    attempts, max_attempts, scheduled_at, lease_owner, lease_expires_at, cancel_requested, schedule_id, created_at,
    created_by, started_at, finished_at)
SELECT id, team_id, kind, 'default', 2,
    CASE status WHEN 'succeeded' THEN 'completed' WHEN 'failed' THEN 'discarded' ELSE 'available' END,
    CASE status WHEN 'running' THEN 0 ELSE progress END, NULL, params, result, error, '[]',
    attempts, 3, created_at, NULL, NULL, 0, NULL, created_at, created_by, started_at, finished_at
FROM tasks;
DROP TABLE tasks;
ALTER TABLE tasks_new RENAME TO tasks;
CREATE INDEX tasks_claim ON tasks (queue, state, priority, scheduled_at);
CREATE INDEX tasks_team ON tasks (team_id, created_at);

CREATE TABLE task_logs (
    task_id TEXT NOT NULL REFERENCES tasks (id),
    seq BIGINT NOT NULL,
    at BIGINT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);
