-- PostgreSQL: grow jobs into tasks in place.
ALTER TABLE jobs RENAME TO tasks;
ALTER TABLE tasks RENAME COLUMN status TO state;
ALTER TABLE tasks RENAME COLUMN params TO args;
ALTER TABLE tasks ALTER COLUMN team_id DROP NOT NULL;
ALTER TABLE tasks ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE tasks ADD COLUMN priority BIGINT NOT NULL DEFAULT 2;
ALTER TABLE tasks ADD COLUMN progress_note TEXT;
ALTER TABLE tasks ADD COLUMN errors TEXT NOT NULL DEFAULT '[]';
ALTER TABLE tasks ADD COLUMN max_attempts BIGINT NOT NULL DEFAULT 3;
ALTER TABLE tasks ADD COLUMN scheduled_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
ALTER TABLE tasks ADD COLUMN lease_expires_at BIGINT;
ALTER TABLE tasks ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN schedule_id TEXT;
UPDATE tasks SET state = CASE state WHEN 'succeeded' THEN 'completed' WHEN 'failed' THEN 'discarded' ELSE 'available' END,
    scheduled_at = created_at;
DROP INDEX jobs_status;
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
