//! The platform report: the product brief's dashboard, measured from what the platform saw.
//!
//! - Adoption: teams active (a prediction, a new version or a training run in the month),
//!   models registered and deployed to production, predictions this month and last, growth.
//! - Quality: availability of production deployments (platform failures over requests, from
//!   the health minutes), average live accuracy of production classifiers with labels, incident
//!   MTTA / MTTR (median and p90), satisfaction (CSAT).
//! - Business: cost (the statements), cost per prediction and its trend, cost per team, time
//!   from a model's first version to its first production prediction (to the minute).
//! - Delivery, DORA's four keys for models (fourkeys' definitions): a deployment is a
//!   production revision that brings a version into production (a promotion or a direct
//!   deploy; traffic changes and rollbacks are not), a change is a version registration;
//!   lead time = deployment - the version's registration; change failure rate = deployments
//!   followed within [`FAILURE_WINDOW_HOURS`] by a rollback of, or an incident opened on, that
//!   deployment before any later deployment of it; time to restore = incident opened -> resolved. Frequency bucket: daily when the
//!   median of the last four weeks has 3 or more days with a deployment, weekly when it has 1,
//!   monthly with any deployment in the month, else yearly.
//! - Satisfaction: a 1-5 survey, once a month per person, reported per team only.
//!
//! Percentiles interpolate linearly between ranks (numpy's default).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use plinth_api::billing::{
    Adoption, Business, DoraKeys, MonthFigure, Percentiles, PlatformReport, Quality, ReportQuery,
    Satisfaction, SurveyAnswer, TeamSatisfaction,
};
use plinth_api::identity::TeamRole;
use plinth_api::registry::Task;
use plinth_api::serving::DeploymentSpec;

use super::MonthId;
use crate::Plinth;
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::monitoring::feedback::Monitored;
use crate::monitoring::health::{AVAILABILITY_TARGET, server_error};
use crate::store::{Sql, col};
use crate::util::{micros_to_time, now_micros};

/// A production deployment counts as failed when a rollback or an incident follows within this.
pub const FAILURE_WINDOW_HOURS: u64 = 24;
const HOUR_US: f64 = 3_600_000_000.0;
const DAY_US: i64 = 86_400_000_000;
/// Months of trend in the report.
const TREND_MONTHS: usize = 6;

/// Median and 90th percentile, linearly interpolated between ranks.
pub(crate) fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let pos = q * (values.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
    };
    Percentiles { count: values.len() as u64, median: Some(at(0.5)), p90: Some(at(0.9)) }
}

/// A production revision of a deployment.
#[derive(Debug, Clone)]
pub(crate) struct Revision {
    pub deployment_id: String,
    pub model_id: String,
    pub action: String,
    pub at: i64,
    pub versions: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct IncidentTimes {
    pub deployment_id: String,
    pub opened_at: i64,
    pub acknowledged_at: Option<i64>,
    pub resolved_at: Option<i64>,
}

/// What DORA's keys are computed from: every production revision (oldest first), every
/// version's registration time, incidents; and the month reported.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    pub revisions: Vec<Revision>,
    /// `(model id, version) -> registered at`.
    pub registered: HashMap<(String, u32), i64>,
    pub incidents: Vec<IncidentTimes>,
    pub since: i64,
    pub until: i64,
}

/// A deployment in DORA's sense: a revision that brought a version into production.
struct Deployed {
    deployment_id: String,
    at: i64,
    lead_us: Vec<i64>,
}

fn deployments(h: &History) -> Vec<Deployed> {
    let mut serving: HashMap<&str, BTreeSet<u32>> = HashMap::new();
    let mut out = Vec::new();
    for r in &h.revisions {
        let before = serving.entry(&r.deployment_id).or_default();
        let new: Vec<u32> = r.versions.iter().copied().filter(|v| !before.contains(v)).collect();
        let brings = !new.is_empty() && r.action != "rollback";
        *before = r.versions.iter().copied().collect();
        if brings {
            let lead_us = new
                .iter()
                .filter_map(|v| h.registered.get(&(r.model_id.clone(), *v)))
                .map(|reg| r.at - reg)
                .filter(|l| *l > 0)
                .collect();
            out.push(Deployed { deployment_id: r.deployment_id.clone(), at: r.at, lead_us });
        }
    }
    out
}

/// DORA's four keys over `h`'s month.
pub(crate) fn delivery(h: &History) -> DoraKeys {
    let all = deployments(h);
    let in_month: Vec<&Deployed> =
        all.iter().filter(|d| d.at >= h.since && d.at < h.until).collect();
    let window = FAILURE_WINDOW_HOURS as i64 * 3_600_000_000;
    // A rollback or an incident is charged to the deployment's latest change before it, when
    // that change is at most the window old.
    let mut failed_at: BTreeSet<(String, i64)> = BTreeSet::new();
    let events = h
        .revisions
        .iter()
        .filter(|r| r.action == "rollback")
        .map(|r| (&r.deployment_id, r.at))
        .chain(h.incidents.iter().map(|i| (&i.deployment_id, i.opened_at)));
    for (deployment, at) in events {
        let culprit = all
            .iter()
            .filter(|d| &d.deployment_id == deployment && d.at <= at)
            .max_by_key(|d| d.at)
            .filter(|d| at - d.at <= window);
        if let Some(d) = culprit {
            failed_at.insert((d.deployment_id.clone(), d.at));
        }
    }
    let failed =
        in_month.iter().filter(|d| failed_at.contains(&(d.deployment_id.clone(), d.at))).count();
    // Days with a deployment in each of the four weeks before the month's end (or now).
    let end = h.until;
    let days: BTreeSet<i64> =
        all.iter().filter(|d| d.at < end).map(|d| d.at.div_euclid(DAY_US)).collect();
    let mut per_week: Vec<f64> = (0..4)
        .map(|w| {
            let hi = end.div_euclid(DAY_US) - 7 * w;
            days.range(hi - 6..=hi).count() as f64
        })
        .collect();
    per_week.sort_by(f64::total_cmp);
    let median_week = (per_week[1] + per_week[2]) / 2.0;
    let frequency = if median_week >= 3.0 {
        "daily"
    } else if median_week >= 1.0 {
        "weekly"
    } else if !in_month.is_empty() {
        "monthly"
    } else {
        "yearly"
    };
    let restore = h
        .incidents
        .iter()
        .filter(|i| i.opened_at >= h.since && i.opened_at < h.until)
        .filter_map(|i| i.resolved_at.map(|r| (r - i.opened_at) as f64 / HOUR_US))
        .collect();
    DoraKeys {
        deployments: in_month.len() as u64,
        deployment_frequency: frequency.into(),
        lead_time_hours: percentiles(
            in_month.iter().flat_map(|d| d.lead_us.iter().map(|l| *l as f64 / HOUR_US)).collect(),
        ),
        change_failure_rate: (!in_month.is_empty()).then(|| failed as f64 / in_month.len() as f64),
        failure_window_hours: FAILURE_WINDOW_HOURS,
        time_to_restore_hours: percentiles(restore),
    }
}

/// Incidents opened in the month: minutes to acknowledge and to resolve.
pub(crate) fn incident_minutes(h: &History) -> (u64, Percentiles, Percentiles) {
    let opened: Vec<&IncidentTimes> =
        h.incidents.iter().filter(|i| i.opened_at >= h.since && i.opened_at < h.until).collect();
    let minutes = |t: Option<i64>, from: i64| t.map(|t| (t - from) as f64 / 60e6);
    let mtta = opened.iter().filter_map(|i| minutes(i.acknowledged_at, i.opened_at)).collect();
    let mttr = opened.iter().filter_map(|i| minutes(i.resolved_at, i.opened_at)).collect();
    (opened.len() as u64, percentiles(mtta), percentiles(mttr))
}

/// A survey's answers as CSAT: the share of 4 and 5.
fn csat(scores: &[u8]) -> Option<f64> {
    (!scores.is_empty())
        .then(|| scores.iter().filter(|s| **s >= 4).count() as f64 / scores.len() as f64)
}

impl Plinth {
    /// Records the caller's satisfaction answer for this month (once a month per person).
    pub async fn answer_survey(&self, who: &Principal, answer: SurveyAnswer) -> Result<()> {
        if !(1..=5).contains(&answer.score) {
            return Err(Error::invalid("score", "answer 1 (very unhappy) to 5 (very happy)"));
        }
        if answer.comment.chars().count() > 2000 {
            return Err(Error::invalid("comment", "at most 2000 characters"));
        }
        let team_id = match &answer.team {
            Some(t) => {
                let team = self.team_ref(who, t).await.map_err(|e| e.with_field("team"))?;
                if !who.teams.contains_key(&team.id) {
                    return Err(Error::invalid("team", format!("you are not a member of '{t}'")));
                }
                Some(team.id)
            }
            // A member of one team speaks for it.
            None if who.teams.len() == 1 => who.teams.keys().next().cloned(),
            None => None,
        };
        let now = now_micros();
        let month = MonthId::of(now);
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO survey_answers (principal_id, month, team_id, score, comment, at) VALUES ($1, $2, $3, $4, $5, $6)",
            [who.id.clone().into(), month.to_string().into(), team_id.into(), i64::from(answer.score).into(), answer.comment.into(), now.into()],
        )
        .execute_unique(&mut tx, || {
            Error::conflict(format!(
                "you have answered this month's survey; the next one opens on {}-01",
                month.next()
            ))
        })
        .await?;
        tx.commit().await
    }

    /// The platform report of a month: every team's (admins, reviewers) or one team's slice
    /// (its members).
    pub async fn platform_report(
        &self,
        who: &Principal,
        q: &ReportQuery,
    ) -> Result<PlatformReport> {
        let now = now_micros();
        let month = MonthId::or_now("month", q.month.as_deref(), now)?;
        if month > MonthId::of(now) {
            return Err(Error::invalid("month", format!("{month} has not begun")));
        }
        let teams: Vec<TeamRef> = match &q.team {
            Some(t) => {
                let team = self.team_ref(who, t).await?;
                who.require(&team, TeamRole::Viewer, "reading the team's report")?;
                vec![team]
            }
            None => {
                if who.platform_role.is_none() {
                    return Err(Error::forbidden(
                        "the platform report needs a platform role; name one of your teams (team=...) for its slice",
                    ));
                }
                self.all_team_refs().await?
            }
        };
        let ids: BTreeSet<String> = teams.iter().map(|t| t.id.clone()).collect();
        let (since, until) = (month.start(), month.end().min(now.max(month.start() + 1)));
        let report_until = month.end();

        // Adoption.
        let mut trend = Vec::new();
        let mut months = vec![month];
        for _ in 1..TREND_MONTHS {
            months.push(months.last().expect("a month").prev());
        }
        months.reverse();
        let mut predictions_by_month = BTreeMap::new();
        // The teams that predicted this month (the last month of the trend).
        let mut active: BTreeSet<String> = BTreeSet::new();
        for m in &months {
            let by_team = self.predictions_by_team(*m).await?;
            let mine = by_team.iter().filter(|(t, n)| ids.contains(*t) && **n > 0);
            let n: u64 = mine.clone().map(|(_, n)| n).sum();
            if m == &month {
                active = mine.map(|(t, _)| t.clone()).collect();
            }
            predictions_by_month.insert(*m, n);
            trend.push(MonthFigure { month: m.to_string(), value: n as f64 });
        }
        let this = predictions_by_month[&month];
        let last = predictions_by_month[&month.prev()];
        for r in self
            .db
            .fetch_all(&Sql::with(
                "SELECT DISTINCT team_id FROM model_versions WHERE created_at >= $1 AND created_at < $2
                 UNION SELECT DISTINCT team_id FROM training_runs WHERE created_at >= $1 AND created_at < $2",
                [since.into(), report_until.into()],
            ))
            .await?
        {
            let t: String = col(&r, "team_id")?;
            if ids.contains(&t) {
                active.insert(t);
            }
        }
        let models = self
            .db
            .fetch_all(&Sql::with(
                "SELECT id, team_id, task FROM models WHERE created_at < $1",
                [report_until.into()],
            ))
            .await?;
        let mut model_task: HashMap<String, (String, String)> = HashMap::new();
        for r in &models {
            let team: String = col(r, "team_id")?;
            if ids.contains(&team) {
                model_task.insert(col(r, "id")?, (team, col(r, "task")?));
            }
        }
        let production = self
            .db
            .fetch_all(&Sql::new(
                "SELECT d.id, d.team_id, d.model_id, d.spec, t.name AS team_name, m.name AS model_name FROM deployments d
                 JOIN teams t ON t.id = d.team_id JOIN models m ON m.id = d.model_id WHERE d.environment = 'production'",
            ))
            .await?;
        let mut deployed = Vec::new();
        for r in &production {
            let team: String = col(r, "team_id")?;
            if !ids.contains(&team) {
                continue;
            }
            let spec: DeploymentSpec = serde_json::from_str(&col::<String>(r, "spec")?)?;
            if spec.versions.is_empty() {
                continue;
            }
            let model_id: String = col(r, "model_id")?;
            let task = model_task
                .get(&model_id)
                .and_then(|(_, t)| Task::parse(t))
                .unwrap_or(Task::Regression);
            deployed.push(Monitored {
                id: col(r, "id")?,
                team_id: team,
                team: col(r, "team_name")?,
                model_id,
                task,
                name: format!(
                    "{}/{}@production",
                    col::<String>(r, "team_name")?,
                    col::<String>(r, "model_name")?
                ),
            });
        }
        let adoption = Adoption {
            teams_active: active.len() as u64,
            teams_total: teams.len() as u64,
            models_registered: model_task.len() as u64,
            models_deployed: deployed.iter().map(|d| &d.model_id).collect::<BTreeSet<_>>().len()
                as u64,
            predictions_this_month: this,
            predictions_last_month: last,
            growth: (last > 0).then(|| (this as f64 - last as f64) / last as f64),
            predictions_trend: trend,
        };

        // Quality.
        let (mut requests, mut failed) = (0u64, 0u64);
        let mut accuracies = Vec::new();
        for d in &deployed {
            let f = self.health_figures(&d.id, since, report_until).await?;
            requests += f.requests;
            failed += f.errors.iter().filter(|(c, _)| server_error(c)).map(|(_, n)| n).sum::<u64>();
            if matches!(d.task, Task::BinaryClassification | Task::MulticlassClassification) {
                let perf = self.performance_of(d, since, report_until, None).await?;
                let labelled: u64 = perf.iter().map(|p| p.labelled).sum();
                if labelled > 0 {
                    // Weighted by each version's labelled rows.
                    let acc: f64 = perf
                        .iter()
                        .filter_map(|p| p.metrics.get("accuracy").map(|a| a * p.labelled as f64))
                        .sum::<f64>()
                        / labelled as f64;
                    accuracies.push(acc);
                }
            }
        }
        let history = self.history(&ids, since, until).await?;
        let (incidents_opened, mtta, mttr) = incident_minutes(&history);
        let satisfaction = self.satisfaction(&teams, month).await?;
        let quality = Quality {
            availability: (requests > 0).then(|| 1.0 - failed as f64 / requests as f64),
            availability_target: AVAILABILITY_TARGET,
            average_live_accuracy: (!accuracies.is_empty())
                .then(|| accuracies.iter().sum::<f64>() / accuracies.len() as f64),
            models_with_labels: accuracies.len() as u64,
            incidents_opened,
            mtta_minutes: mtta,
            mttr_minutes: mttr,
            satisfaction: satisfaction.csat,
        };

        // Business.
        let mut cost_by_team = BTreeMap::new();
        let mut cost_trend = Vec::new();
        let mut cost_this = 0.0;
        for m in &months {
            let mut total = 0.0;
            for t in &teams {
                let s = self.statement_of(t, *m, now).await?;
                total += s.total_usd;
                if m == &month {
                    cost_by_team.insert(t.name.clone(), s.total_usd);
                }
            }
            let n = predictions_by_month[m];
            if m == &month {
                cost_this = total;
            }
            if n > 0 {
                cost_trend.push(MonthFigure { month: m.to_string(), value: total / n as f64 });
            }
        }
        let mut launches = Vec::new();
        for (first_version, first_prediction) in self.launches(&ids).await? {
            if first_prediction >= since && first_prediction < report_until {
                launches.push((first_prediction - first_version).max(0) as f64 / HOUR_US);
            }
        }
        let business = Business {
            cost_usd: cost_this,
            cost_per_prediction_usd: (this > 0).then(|| cost_this / this as f64),
            cost_per_prediction_trend: cost_trend,
            cost_by_team,
            time_to_launch_hours: percentiles(launches),
        };
        Ok(PlatformReport {
            month: month.to_string(),
            team: q.team.clone(),
            adoption,
            quality,
            business,
            delivery: delivery(&history),
            satisfaction,
            generated_at: micros_to_time(now),
        })
    }

    /// Production revisions, version registrations and incidents of the teams.
    async fn history(&self, ids: &BTreeSet<String>, since: i64, until: i64) -> Result<History> {
        let mut h = History { since, until, ..History::default() };
        for r in self
            .db
            .fetch_all(&Sql::new(
                "SELECT r.deployment_id, d.model_id, d.team_id, r.action, r.at, r.spec FROM deployment_revisions r
                 JOIN deployments d ON d.id = r.deployment_id WHERE d.environment = 'production' ORDER BY r.deployment_id, r.revision",
            ))
            .await?
        {
            if !ids.contains(&col::<String>(&r, "team_id")?) {
                continue;
            }
            let spec: DeploymentSpec = serde_json::from_str(&col::<String>(&r, "spec")?)?;
            h.revisions.push(Revision {
                deployment_id: col(&r, "deployment_id")?,
                model_id: col(&r, "model_id")?,
                action: col(&r, "action")?,
                at: col(&r, "at")?,
                versions: spec.versions.iter().map(|v| v.version).collect(),
            });
        }
        h.revisions.sort_by_key(|r| r.at);
        for r in self
            .db
            .fetch_all(&Sql::new(
                "SELECT team_id, model_id, version, created_at FROM model_versions",
            ))
            .await?
        {
            if !ids.contains(&col::<String>(&r, "team_id")?) {
                continue;
            }
            h.registered.insert(
                (col(&r, "model_id")?, col::<i64>(&r, "version")? as u32),
                col(&r, "created_at")?,
            );
        }
        for r in self
            .db
            .fetch_all(&Sql::new(
                "SELECT team_id, deployment_id, opened_at, acknowledged_at, resolved_at FROM incidents",
            ))
            .await?
        {
            if !ids.contains(&col::<String>(&r, "team_id")?) {
                continue;
            }
            h.incidents.push(IncidentTimes {
                deployment_id: col(&r, "deployment_id")?,
                opened_at: col(&r, "opened_at")?,
                acknowledged_at: col(&r, "acknowledged_at")?,
                resolved_at: col(&r, "resolved_at")?,
            });
        }
        Ok(h)
    }

    /// Each model's first version and first production prediction (the first health minute
    /// of its production deployment): `(first version at, first prediction at)`.
    async fn launches(&self, ids: &BTreeSet<String>) -> Result<Vec<(i64, i64)>> {
        let mut out = Vec::new();
        for r in self
            .db
            .fetch_all(&Sql::new(
                "SELECT d.team_id, d.model_id, (SELECT MIN(h.minute) FROM health_minutes h WHERE h.deployment_id = d.id) AS first_minute,
                        (SELECT MIN(v.created_at) FROM model_versions v WHERE v.model_id = d.model_id) AS first_version
                 FROM deployments d WHERE d.environment = 'production'",
            ))
            .await?
        {
            if !ids.contains(&col::<String>(&r, "team_id")?) {
                continue;
            }
            let (Some(first), Some(version)) =
                (col::<Option<i64>>(&r, "first_minute")?, col::<Option<i64>>(&r, "first_version")?)
            else {
                continue;
            };
            out.push((version, first));
        }
        Ok(out)
    }

    async fn satisfaction(&self, teams: &[TeamRef], month: MonthId) -> Result<Satisfaction> {
        let names: HashMap<&str, &str> =
            teams.iter().map(|t| (t.id.as_str(), t.name.as_str())).collect();
        let mut all = Vec::new();
        let mut by_team: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for r in self
            .db
            .fetch_all(&Sql::with(
                "SELECT team_id, score FROM survey_answers WHERE month = $1",
                [month.to_string().into()],
            ))
            .await?
        {
            let score = col::<i64>(&r, "score")?.clamp(1, 5) as u8;
            let team: Option<String> = col(&r, "team_id")?;
            match team.as_deref().and_then(|t| names.get(t)) {
                Some(name) => {
                    by_team.entry(name.to_string()).or_default().push(score);
                    all.push(score);
                }
                // Answers for no team count for the whole platform only.
                None if team.is_none() && teams.len() > 1 => all.push(score),
                None => {}
            }
        }
        Ok(Satisfaction {
            answers: all.len() as u64,
            mean_score: (!all.is_empty())
                .then(|| all.iter().map(|s| f64::from(*s)).sum::<f64>() / all.len() as f64),
            csat: csat(&all),
            by_team: by_team
                .into_iter()
                .map(|(t, s)| {
                    (t, TeamSatisfaction { answers: s.len() as u64, csat: csat(&s).unwrap_or(0.0) })
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;
    const D: i64 = 24 * H;

    fn rev(dep: &str, action: &str, at: i64, versions: &[u32]) -> Revision {
        Revision {
            deployment_id: dep.into(),
            model_id: format!("m-{dep}"),
            action: action.into(),
            at,
            versions: versions.to_vec(),
        }
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let p = percentiles(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((p.count, p.median, p.p90), (4, Some(2.5), Some(3.7)));
        assert_eq!(percentiles(vec![]).median, None);
        assert_eq!(percentiles(vec![5.0]).p90, Some(5.0));
    }

    /// A scripted month: two deployments, one rolled back, incidents at known times.
    #[test]
    fn dora_keys_from_a_scripted_history() {
        let month = 100 * D;
        let mut h = History { since: month, until: month + 30 * D, ..History::default() };
        // a: v1 registered 10 h before its deploy on day 1; v2 registered on day 4, promoted
        // on day 5 (+24 h), rolled back 2 h later (a failed change).
        h.registered.insert(("m-a".into(), 1), month + D - 10 * H);
        h.registered.insert(("m-a".into(), 2), month + 4 * D);
        h.registered.insert(("m-b".into(), 1), month + 2 * D);
        h.registered.insert(("m-b".into(), 2), month + 8 * D);
        h.revisions = vec![
            rev("a", "deploy", month + D, &[1]),
            rev("b", "promote", month + 2 * D + 6 * H, &[1]),
            rev("a", "promote", month + 5 * D, &[2]),
            rev("a", "rollback", month + 5 * D + 2 * H, &[1]),
            // A traffic change is not a deployment.
            rev("b", "traffic", month + 6 * D, &[1]),
            // b's v2 canary on day 10, 48 h after it was registered; an incident opens on b
            // 30 h later: outside the failure window.
            rev("b", "promote", month + 10 * D, &[1, 2]),
        ];
        h.incidents = vec![
            IncidentTimes {
                deployment_id: "b".into(),
                opened_at: month + 11 * D + 6 * H,
                acknowledged_at: Some(month + 11 * D + 6 * H + 15 * 60_000_000),
                resolved_at: Some(month + 11 * D + 9 * H),
            },
            IncidentTimes {
                deployment_id: "a".into(),
                opened_at: month + 20 * D,
                acknowledged_at: Some(month + 20 * D + 5 * 60_000_000),
                resolved_at: Some(month + 20 * D + H),
            },
        ];
        let d = delivery(&h);
        // Deployments: a v1 (day 1), b v1 (day 2), a v2 (day 5), b v2 (day 10) = 4; the
        // rollback re-serves v1, which a already served before: not a deployment.
        assert_eq!(d.deployments, 4);
        // Lead times 10 h, 6 h, 24 h, 48 h: median 17 h, p90 = 24 + 0.7 * 24 = 40.8 h.
        assert_eq!(d.lead_time_hours.count, 4);
        assert!((d.lead_time_hours.median.unwrap() - 17.0).abs() < 1e-9);
        assert!((d.lead_time_hours.p90.unwrap() - 40.8).abs() < 1e-9);
        // One of four failed (a v2, rolled back within 24 h).
        assert_eq!(d.change_failure_rate, Some(0.25));
        // Restore: 3 h and 1 h.
        assert_eq!(d.time_to_restore_hours.median, Some(2.0));
        // The four weeks before day 30 (days 3-30) hold deploy days 5 and 10: weeks
        // [0, 0, 1, 1], median 0.5: fewer than one a week, but some this month.
        assert_eq!(d.deployment_frequency, "monthly");
        let (opened, mtta, mttr) = incident_minutes(&h);
        assert_eq!(opened, 2);
        assert_eq!(mtta.median, Some(10.0));
        assert_eq!(mttr.median, Some(120.0));
        assert_eq!(mttr.p90, Some(60.0 + 0.9 * 120.0));
    }

    #[test]
    fn csat_is_the_share_of_fours_and_fives() {
        assert_eq!(csat(&[5, 4, 3, 1]), Some(0.5));
        assert_eq!(csat(&[]), None);
    }
}
