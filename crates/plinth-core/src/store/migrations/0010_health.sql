-- A deployment's serving figures minute by minute, one row per replica: what it served in that
-- minute (requests, rows, errors by code, latency buckets, per version). Queries add replicas up.
CREATE TABLE health_minutes (
    deployment_id TEXT NOT NULL,
    minute BIGINT NOT NULL,
    replica TEXT NOT NULL,
    figures TEXT NOT NULL,
    PRIMARY KEY (deployment_id, minute, replica)
);
