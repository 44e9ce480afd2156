//! An alert's notification in the shapes receivers expect: Alertmanager's webhook (version 4)
//! and PagerDuty's Events API v2, built from the `alert.firing` / `alert.resolved` event's data.

use serde_json::json;

/// An alert event's data as Alertmanager's webhook body (version 4): one alert per body.
pub(crate) fn alertmanager_body(data: &serde_json::Value) -> serde_json::Value {
    let status = if data["state"] == "resolved" { "resolved" } else { "firing" };
    let deployment = data["deployment"].as_str().unwrap_or_default();
    let (team, rest) = deployment.split_once('/').unwrap_or((deployment, ""));
    let (model, environment) = rest.split_once('@').unwrap_or((rest, ""));
    let mut labels = json!({
        "alertname": data["rule"],
        "severity": data["severity"],
        "team": team,
        "model": model,
        "environment": environment,
        "deployment": deployment,
    });
    if let Some(own) = data["labels"].as_object() {
        for (k, v) in own {
            labels[k] = v.clone();
        }
    }
    let annotations = json!({
        "summary": data["summary"],
        "value": data["value"].to_string(),
        "threshold": data["threshold"].to_string(),
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{}\", deployment=\"{deployment}\"}}", data["rule"].as_str().unwrap_or_default()),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": format!("plinth-{team}"),
        "groupLabels": {"alertname": data["rule"], "deployment": deployment},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": data["active_since"],
            // Alertmanager's zero time while the alert fires.
            "endsAt": data["resolved_at"].as_str().unwrap_or("0001-01-01T00:00:00Z"),
            "generatorURL": "",
            "fingerprint": data["key"],
        }],
    })
}

/// An alert event's data as a PagerDuty Events API v2 body: trigger when it fires, resolve
/// when it resolves, under one dedup key.
pub(crate) fn pagerduty_body(data: &serde_json::Value, routing_key: &str) -> serde_json::Value {
    let resolved = data["state"] == "resolved";
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": if resolved { "resolve" } else { "trigger" },
        "dedup_key": data["key"],
    });
    if !resolved {
        body["payload"] = json!({
            "summary": format!("{}: {}", data["deployment"].as_str().unwrap_or_default(), data["summary"].as_str().unwrap_or_default()),
            "source": data["deployment"],
            "severity": data["severity"],
            "timestamp": data["fired_at"],
            "component": data["deployment"],
            "class": data["rule"],
            "custom_details": {"value": data["value"], "threshold": data["threshold"], "active_since": data["active_since"], "labels": data["labels"]},
        });
    }
    body
}
