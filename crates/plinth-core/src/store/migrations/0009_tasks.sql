-- The backbone of background work: durable tasks (the jobs table, grown: queues, priorities,
-- states, attempts with backoff, leases renewed by their runner, cancellation, progress notes)
-- with a bounded log each; schedules that fire periodic tasks, one replica per occurrence; an
-- outbox of events that consumers read with their own cursor; and change counters replicas poll
-- to pick up what another replica changed. The jobs -> tasks rebuild is per dialect (SQLite
-- cannot drop NOT NULL in place), with each task's log; these tables are common.

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    -- The team's id, or '*' for the platform's own schedules (team_id NULL).
    scope TEXT NOT NULL,
    team_id TEXT REFERENCES teams (id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    args TEXT NOT NULL,
    -- Either an interval in seconds or a cron expression (UTC, five fields).
    interval_seconds BIGINT,
    cron TEXT,
    -- The next occurrence to fire (microseconds). The replica that fires an occurrence moves it
    -- on with a compare-and-set (`WHERE next_at = <the occurrence>`) in the transaction that
    -- enqueues the task: exactly one replica wins each occurrence, and no lock outlives it.
    next_at BIGINT NOT NULL,
    enabled BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    UNIQUE (scope, name)
);
CREATE INDEX schedules_due ON schedules (enabled, next_at);

-- Events worth reacting to, written in the transaction of the change they announce. `seq` is
-- taken from event_seq under its row lock, so sequence order is commit order and a consumer's
-- cursor never skips an event committed late.
CREATE TABLE events (
    seq BIGINT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    team_id TEXT,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX events_type ON events (type, seq);

CREATE TABLE event_seq (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO event_seq (name, value) VALUES ('events', 0);

-- Each consumer's position, and the replica reading for it now (a lease, so one replica
-- consumes at a time).
CREATE TABLE event_cursors (
    consumer TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT
);

-- Change counters: a change another replica must pick up (a deployment, keys and roles)
-- bumps its counter in its own transaction; every replica polls them.
CREATE TABLE change_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO change_counters (name, value) VALUES ('deployments', 0);
INSERT INTO change_counters (name, value) VALUES ('identity', 0);

-- Each replica's serving figures of each deployment, published every few seconds, so that the
-- API's figures add up every replica's.
CREATE TABLE replica_figures (
    replica TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    figures TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (replica, deployment_id)
);
