-- A webhook's body shape (plinth, alertmanager, pagerduty) and PagerDuty's routing key.
ALTER TABLE webhooks ADD COLUMN format TEXT NOT NULL DEFAULT 'plinth';
ALTER TABLE webhooks ADD COLUMN routing_key TEXT;
