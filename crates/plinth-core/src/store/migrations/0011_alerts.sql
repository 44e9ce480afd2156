-- Each alert rule's state per deployment (pending, firing, resolved, inactive).
CREATE TABLE alert_states (
    deployment_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    value TEXT NOT NULL,
    active_since BIGINT NOT NULL,
    fired_at BIGINT,
    resolved_at BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, rule)
);
