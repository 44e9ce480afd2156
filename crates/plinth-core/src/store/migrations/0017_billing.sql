-- Cost allocation: what each team used, month by month, added to by every replica (each adds
-- what it metered since its last flush: no replica overwrites another's figures).
-- `item`: predictions (served traffic), shadow, training, artifacts, datasets, prediction_log.
-- `subject`: the deployment's environment, the run's recipe, the dataset; '' when none.
CREATE TABLE usage_months (
    team_id TEXT NOT NULL,
    month TEXT NOT NULL,
    item TEXT NOT NULL,
    model TEXT NOT NULL,
    subject TEXT NOT NULL,
    version BIGINT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    rows_ok BIGINT NOT NULL DEFAULT 0,
    cpu_us BIGINT NOT NULL DEFAULT 0,
    byte_seconds BIGINT NOT NULL DEFAULT 0,
    runs BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (team_id, month, item, model, subject, version)
);

-- The price book: plans the admins edit, as JSON specs.
CREATE TABLE plans (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);

-- A team's plan from a month on: the plan of month M is the row with the latest
-- effective_month <= M (none: the server's default plan).
CREATE TABLE team_plans (
    team_id TEXT NOT NULL REFERENCES teams (id),
    effective_month TEXT NOT NULL,
    plan TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    changed_by TEXT NOT NULL,
    PRIMARY KEY (team_id, effective_month)
);

-- A team's own limits (NULL: the plan's), and its monthly budget in millionths of a USD.
CREATE TABLE team_limits (
    team_id TEXT PRIMARY KEY REFERENCES teams (id),
    predictions_per_month BIGINT,
    requests_per_second BIGINT,
    storage_bytes BIGINT,
    budget_micro_usd BIGINT,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL
);

-- Closed monthly statements: written once, never changed.
CREATE TABLE statements (
    team_id TEXT NOT NULL REFERENCES teams (id),
    month TEXT NOT NULL,
    body TEXT NOT NULL,
    closed_at BIGINT NOT NULL,
    PRIMARY KEY (team_id, month)
);

-- Budget and quota alerts already sent: one per team, month, limit and threshold.
CREATE TABLE budget_alerts (
    team_id TEXT NOT NULL,
    month TEXT NOT NULL,
    kind TEXT NOT NULL,
    percent BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (team_id, month, kind, percent)
);

-- Satisfaction survey answers: at most one per person and month.
CREATE TABLE survey_answers (
    principal_id TEXT NOT NULL,
    month TEXT NOT NULL,
    team_id TEXT,
    score BIGINT NOT NULL,
    comment TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (principal_id, month)
);

-- Replicas seen lately (each writes its row when it syncs its quota counters): a team's
-- requests-per-second limit is shared out between them.
CREATE TABLE replica_heartbeats (
    replica TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
