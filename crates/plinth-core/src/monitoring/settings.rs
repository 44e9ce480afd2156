//! A deployment's monitoring settings: its drift baseline and per-feature tests, the SLA's
//! default rules tuned or disabled, and its own alert rules. Maintainers of its team set them,
//! audited; anyone who may see the deployment reads them. An environment whose policy sets
//! `require_sla_alerts` refuses settings that disable or loosen the SLA's rules.

use std::collections::BTreeSet;

use plinth_api::identity::TeamRole;
use plinth_api::monitoring::MonitoringSettings;
use serde_json::json;

use super::drift::Method;
use super::rules::{SLA_RULES, Series};
use super::served::parse_dataset;
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_name, now_micros};

const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];
const MAX_RULES: usize = 50;
const MAX_WINDOW_SECONDS: u32 = 30 * 86_400;

impl Plinth {
    /// A deployment's stored settings (the defaults when none are stored).
    pub(crate) async fn monitoring_settings_of(
        &self,
        deployment_id: &str,
    ) -> Result<MonitoringSettings> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT settings FROM monitoring_settings WHERE deployment_id = $1",
                [deployment_id.into()],
            ))
            .await?;
        match row {
            Some(r) => Ok(serde_json::from_str(&col::<String>(&r, "settings")?)?),
            None => Ok(MonitoringSettings::default()),
        }
    }

    /// How a deployment is monitored, for anyone who may see it.
    pub async fn get_monitoring_settings(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
    ) -> Result<MonitoringSettings> {
        let m = self.monitored(who, team, model, environment).await?;
        self.monitoring_settings_of(&m.id).await
    }

    /// Replaces a deployment's monitoring settings (maintainers of its team).
    pub async fn set_monitoring_settings(
        &self,
        who: &Principal,
        team: &str,
        model: &str,
        environment: &str,
        settings: MonitoringSettings,
    ) -> Result<MonitoringSettings> {
        let m = self.monitored(who, team, model, environment).await?;
        let t = TeamRef { id: m.team_id.clone(), name: m.team.clone() };
        who.require(&t, TeamRole::Maintainer, "changing a deployment's monitoring")?;
        check(&settings)?;
        if let Some(b) = &settings.baseline {
            self.resolve_dataset(&t, &parse_dataset(b, "baseline")?, "baseline").await?;
        }
        if self
            .effective_policy(&m.team_id, environment)
            .await?
            .is_some_and(|p| p.require_sla_alerts)
        {
            keeps_sla(&settings, environment)?;
        }
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO monitoring_settings (deployment_id, settings, updated_at, updated_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (deployment_id) DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            [
                m.id.clone().into(),
                serde_json::to_string(&settings)?.into(),
                now.into(),
                who.name.clone().into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        let target = Target {
            team_id: Some(&m.team_id),
            object_type: "deployment",
            object_id: &m.id,
            object_name: &m.name,
        };
        audit::record(&mut tx, who, "deployment.monitoring", target, json!(settings)).await?;
        tx.commit().await?;
        Ok(settings)
    }
}

/// Every field checked, named in the error.
fn check(s: &MonitoringSettings) -> Result<()> {
    for (feature, test) in &s.drift {
        if let Some(m) = &test.method
            && Method::parse(m).is_none()
        {
            let known: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
            return Err(Error::invalid(
                format!("drift.{feature}.method"),
                format!("unknown test '{m}'; known: {}", known.join(", ")),
            ));
        }
        if let Some(t) = test.threshold
            && !(t.is_finite() && t > 0.0)
        {
            return Err(Error::invalid(format!("drift.{feature}.threshold"), "a positive number"));
        }
    }
    if let Some(d) = s.drift_share
        && !(d > 0.0 && d <= 1.0)
    {
        return Err(Error::invalid("drift_share", "between 0 (exclusive) and 1"));
    }
    for (name, o) in &s.sla {
        if !SLA_RULES.iter().any(|r| r.name == name) {
            let known: Vec<&str> = SLA_RULES.iter().map(|r| r.name).collect();
            return Err(Error::invalid(
                format!("sla.{name}"),
                format!("not one of the SLA's rules ({})", known.join(", ")),
            ));
        }
        check_common(
            &format!("sla.{name}"),
            o.threshold,
            None,
            o.for_seconds,
            o.severity.as_deref(),
        )?;
    }
    if s.rules.len() > MAX_RULES {
        return Err(Error::invalid("rules", format!("at most {MAX_RULES} rules")));
    }
    let mut names = BTreeSet::new();
    for (i, r) in s.rules.iter().enumerate() {
        let at = |f: &str| format!("rules[{i}].{f}");
        check_name(&at("name"), &r.name)?;
        if r.labels.len() > 20 {
            return Err(Error::invalid(at("labels"), "at most 20 labels"));
        }
        for (k, v) in &r.labels {
            let field = format!("rules[{i}].labels.{}", crate::error::shown(k));
            let valid = !k.is_empty()
                && k.len() <= 64
                && k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(Error::invalid(
                    field,
                    "a label name is letters, digits and _ (not first), at most 64",
                ));
            }
            if super::rules::RESERVED_LABELS.contains(&k.as_str()) {
                return Err(Error::invalid(field, "is one of Plinth's own labels"));
            }
            crate::util::check_text(&field, v, 200)?;
        }
        if SLA_RULES.iter().any(|x| x.name == r.name) || !names.insert(r.name.as_str()) {
            return Err(Error::invalid(
                at("name"),
                format!(
                    "'{}' is taken (the SLA's rules' names and each rule's are unique)",
                    r.name
                ),
            ));
        }
        let Some(series) = Series::parse(&r.series) else {
            let known: Vec<&str> = Series::ALL.iter().map(|s| s.as_str()).collect();
            return Err(Error::invalid(
                at("series"),
                format!("unknown series '{}'; known: {}", r.series, known.join(", ")),
            ));
        };
        match series {
            Series::MetricDrop if r.metric.is_none() => {
                return Err(Error::invalid(
                    at("metric"),
                    "metric_drop needs the metric (accuracy, f1, roc_auc, rmse, ...)",
                ));
            }
            Series::FeatureDrift if r.feature.is_none() => {
                return Err(Error::invalid(at("feature"), "feature_drift needs the feature"));
            }
            _ => {}
        }
        check_common(
            &format!("rules[{i}]"),
            Some(r.threshold),
            r.window_seconds,
            r.for_seconds,
            r.severity.as_deref(),
        )?;
    }
    Ok(())
}

fn check_common(
    at: &str,
    threshold: Option<f64>,
    window: Option<u32>,
    for_seconds: Option<u32>,
    severity: Option<&str>,
) -> Result<()> {
    if let Some(t) = threshold
        && !(t.is_finite() && t >= 0.0)
    {
        return Err(Error::invalid(format!("{at}.threshold"), "a number, 0 or more"));
    }
    if let Some(w) = window
        && !(60..=MAX_WINDOW_SECONDS).contains(&w)
    {
        return Err(Error::invalid(format!("{at}.window_seconds"), "from 60 s to 30 days"));
    }
    if let Some(f) = for_seconds
        && f > MAX_WINDOW_SECONDS
    {
        return Err(Error::invalid(format!("{at}.for_seconds"), "at most 30 days"));
    }
    if let Some(s) = severity
        && !SEVERITIES.contains(&s)
    {
        return Err(Error::invalid(format!("{at}.severity"), "critical, warning or info"));
    }
    Ok(())
}

/// Under a policy that requires the SLA's rules: none disabled, none looser than the SLA.
fn keeps_sla(s: &MonitoringSettings, environment: &str) -> Result<()> {
    for (name, o) in &s.sla {
        let Some(d) = SLA_RULES.iter().find(|r| r.name == name) else { continue };
        if d.loosened_by(o) {
            return Err(Error::invalid(
                format!("sla.{name}"),
                format!(
                    "the policy of '{environment}' requires the SLA's alerts: they may be tightened, not {}",
                    if o.disabled { "disabled" } else { "loosened" }
                ),
            ));
        }
    }
    Ok(())
}
