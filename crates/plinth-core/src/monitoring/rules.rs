//! Alert rules: the series a rule watches ([`Series`]: error rate, p99 latency, the error
//! budget's burn rate, a live metric's drop below the version's evaluation, label coverage, the
//! drifted share of columns or one feature's drift score, the freshness of the views it reads),
//! and the rules of a deployment ([`rules_for`]), each with the summary its alerts carry.
//!
//! Every production deployment has the SLA's rules on its own ([`SLA_RULES`]): error rate above
//! 5 % and p99 latency above 1 s over five minutes, the 99.9 % availability's error budget
//! burning 14.4× too fast over 1 h and its last 5 minutes (critical) or 6× over 6 h and its
//! last 30 minutes (warning), accuracy more than 2 points below the evaluation's over the last
//! day's labelled predictions (classifiers, once labels exist), and a feature view it reads
//! whose newest value is older than the view's freshness SLA (1 h by default). A team tunes or
//! disables them, and adds its own rules, in the deployment's monitoring settings
//! ([`super::settings`]); a policy may require them.

use std::collections::BTreeMap;

use plinth_api::monitoring::{AlertRule, MonitoringSettings};
use plinth_api::registry::Task;

use super::health::AVAILABILITY_TARGET;
use crate::serving::figures::Figures;

pub(crate) const MINUTE_US: i64 = 60_000_000;
pub(crate) const SECOND_US: i64 = 1_000_000;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    ErrorRate,
    LatencyP99,
    BurnRate,
    MetricDrop,
    LabelCoverage,
    DriftShare,
    FeatureDrift,
    Freshness,
}

impl Series {
    pub const ALL: [Series; 8] = [
        Series::ErrorRate,
        Series::LatencyP99,
        Series::BurnRate,
        Series::MetricDrop,
        Series::LabelCoverage,
        Series::DriftShare,
        Series::FeatureDrift,
        Series::Freshness,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Series::ErrorRate => "error_rate",
            Series::LatencyP99 => "latency_p99",
            Series::BurnRate => "burn_rate",
            Series::MetricDrop => "metric_drop",
            Series::LabelCoverage => "label_coverage",
            Series::DriftShare => "drift_share",
            Series::FeatureDrift => "feature_drift",
            Series::Freshness => "freshness",
        }
    }

    pub fn parse(s: &str) -> Option<Series> {
        Series::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn default_window_us(self) -> i64 {
        match self {
            Series::BurnRate => 60 * MINUTE_US,
            Series::MetricDrop | Series::LabelCoverage => 24 * 60 * MINUTE_US,
            _ => 5 * MINUTE_US,
        }
    }

    fn default_for_us(self) -> i64 {
        match self {
            Series::BurnRate => 2 * MINUTE_US,
            _ => 5 * MINUTE_US,
        }
    }
}

/// A rule as evaluated.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub name: String,
    pub series: Series,
    pub summary: String,
    pub severity: String,
    pub threshold: f64,
    /// The range the value is computed over.
    pub window_us: i64,
    /// How long the condition must hold before the alert fires.
    pub for_us: i64,
    pub metric: Option<String>,
    pub feature: Option<String>,
    /// The rule's own labels, for its notifications.
    pub labels: BTreeMap<String, String>,
}

/// Labels every alert carries, which a rule's own cannot replace.
pub(crate) const RESERVED_LABELS: [&str; 6] =
    ["alertname", "severity", "team", "model", "environment", "deployment"];

/// One of the SLA's default rules.
pub(crate) struct SlaRule {
    pub name: &'static str,
    pub series: Series,
    pub threshold: f64,
    pub severity: &'static str,
    pub metric: Option<&'static str>,
    /// The window, when not the series' default.
    pub window_minutes: Option<i64>,
}

impl SlaRule {
    const fn new(
        name: &'static str,
        series: Series,
        threshold: f64,
        severity: &'static str,
    ) -> Self {
        SlaRule { name, series, threshold, severity, metric: None, window_minutes: None }
    }

    /// Whether a team's override turns the rule off or makes it looser than the SLA: a higher
    /// threshold (for freshness, whose 0 means each view's own SLA, more than the platform's
    /// default of an hour), a longer `for` than the rule's, or a lower severity.
    pub(crate) fn loosened_by(&self, o: &plinth_api::monitoring::RuleOverride) -> bool {
        let limit = if self.threshold > 0.0 { self.threshold } else { 3600.0 };
        let rank = |s: &str| ["info", "warning", "critical"].iter().position(|x| *x == s);
        o.disabled
            || o.threshold.is_some_and(|t| t > limit)
            || o.for_seconds
                .is_some_and(|f| i64::from(f) * SECOND_US > self.series.default_for_us())
            || o.severity.as_deref().is_some_and(|s| rank(s) < rank(self.severity))
    }
}

/// The SLA's rules, on every production deployment.
pub(crate) const SLA_RULES: [SlaRule; 6] = [
    SlaRule::new("error_rate", Series::ErrorRate, 0.05, "critical"),
    SlaRule::new("latency_p99", Series::LatencyP99, 1000.0, "warning"),
    // The SRE book's multiwindow pair for a 99.9 % target: 2 % of a 30-day budget in an hour,
    // 5 % in six hours; each window with its twelfth, so a burst that ended stops paging.
    SlaRule {
        window_minutes: Some(60),
        ..SlaRule::new("availability_fast_burn", Series::BurnRate, 14.4, "critical")
    },
    SlaRule {
        window_minutes: Some(360),
        ..SlaRule::new("availability_slow_burn", Series::BurnRate, 6.0, "warning")
    },
    SlaRule {
        metric: Some("accuracy"),
        ..SlaRule::new("accuracy_drop", Series::MetricDrop, 0.02, "warning")
    },
    // The threshold of freshness is each view's own SLA unless a team sets one.
    SlaRule::new("freshness", Series::Freshness, 0.0, "warning"),
];

/// The environment the SLA's rules apply to.
const SLA_ENVIRONMENT: &str = "production";

fn summary_of(r: &Rule) -> String {
    let w = r.window_us / SECOND_US;
    let over = if w % 3600 == 0 {
        format!("{} h", w / 3600)
    } else if w % 60 == 0 {
        format!("{} minutes", w / 60)
    } else {
        format!("{w} s")
    };
    match r.series {
        Series::ErrorRate => {
            format!("more than {} % of requests failed over {over}", r.threshold * 100.0)
        }
        Series::LatencyP99 => format!("p99 latency above {} ms over {over}", r.threshold),
        Series::BurnRate => format!(
            "the error budget burns more than {}x as fast as allowed over {over} and its twelfth",
            r.threshold
        ),
        Series::MetricDrop => format!(
            "live {} more than {} below the evaluation's over the predictions of {over}",
            r.metric.as_deref().unwrap_or("accuracy"),
            r.threshold
        ),
        Series::LabelCoverage => format!(
            "fewer than {} % of the predictions of {over} have a label",
            r.threshold * 100.0
        ),
        Series::DriftShare => {
            format!("at least {} % of the columns drifted over {over}", r.threshold * 100.0)
        }
        Series::FeatureDrift => format!(
            "feature '{}' drifted over {over} (threshold {})",
            r.feature.as_deref().unwrap_or(""),
            r.threshold
        ),
        Series::Freshness if r.threshold == 0.0 => {
            "a feature view it reads is older than its freshness SLA".to_string()
        }
        Series::Freshness => format!("a feature view it reads is more than {} s old", r.threshold),
    }
}

fn secs(s: Option<u32>) -> Option<i64> {
    s.map(|s| i64::from(s) * SECOND_US)
}

/// The rules of a deployment: the SLA's (in production; the accuracy rule for classifiers,
/// the freshness rule when it reads feature views) as its settings tune them, then its own.
/// When the policy requires the SLA's rules, an override that would turn one off or loosen it
/// (saved before the policy said so) is not applied.
pub(crate) fn rules_for(
    environment: &str,
    task: Task,
    reads_views: bool,
    settings: &MonitoringSettings,
    sla_required: bool,
) -> Vec<Rule> {
    let mut out = Vec::new();
    if environment == SLA_ENVIRONMENT {
        for d in &SLA_RULES {
            let applies = match d.series {
                Series::MetricDrop => task != Task::Regression,
                Series::Freshness => reads_views,
                _ => true,
            };
            let mut o = settings.sla.get(d.name).cloned().unwrap_or_default();
            if sla_required && d.loosened_by(&o) {
                o = Default::default();
            }
            if !applies || o.disabled {
                continue;
            }
            let mut r = Rule {
                name: d.name.to_string(),
                series: d.series,
                summary: String::new(),
                severity: o.severity.unwrap_or_else(|| d.severity.to_string()),
                threshold: o.threshold.unwrap_or(d.threshold),
                window_us: d.window_minutes.map_or(d.series.default_window_us(), |m| m * MINUTE_US),
                for_us: secs(o.for_seconds).unwrap_or(d.series.default_for_us()),
                metric: d.metric.map(str::to_string),
                feature: None,
                labels: BTreeMap::new(),
            };
            r.summary = summary_of(&r);
            out.push(r);
        }
    }
    for a in &settings.rules {
        let Some(series) = Series::parse(&a.series) else { continue };
        out.push(custom_rule(a, series));
    }
    out
}

fn custom_rule(a: &AlertRule, series: Series) -> Rule {
    let mut r = Rule {
        name: a.name.clone(),
        series,
        summary: String::new(),
        severity: a.severity.clone().unwrap_or_else(|| "warning".to_string()),
        threshold: a.threshold,
        window_us: secs(a.window_seconds).unwrap_or(series.default_window_us()),
        for_us: secs(a.for_seconds).unwrap_or(series.default_for_us()),
        metric: a.metric.clone(),
        feature: a.feature.clone(),
        labels: a.labels.clone(),
    };
    r.summary = summary_of(&r);
    r
}

/// How many times faster than the SLA allows the error budget burns over a window's figures
/// (a caller's mistakes, 4xx, do not count); `None` without requests.
pub(crate) fn burn_rate(f: &Figures) -> Option<f64> {
    (f.requests > 0).then(|| {
        let failed: u64 = f
            .errors
            .iter()
            .filter(|(code, _)| super::health::server_error(code))
            .map(|(_, n)| n)
            .sum();
        (failed as f64 / f.requests as f64) / (1.0 - AVAILABILITY_TARGET)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(requests: u64, errors: &[(&str, u64)]) -> Figures {
        Figures {
            requests,
            errors: errors.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            ..Figures::default()
        }
    }

    #[test]
    fn the_burn_rate_counts_the_platforms_failures_against_the_budget() {
        // 2 % of requests failing on the platform burns a 0.1 % budget 20 times too fast.
        let rate = burn_rate(&figures(1000, &[("internal", 15), ("overloaded", 5)])).unwrap();
        assert!((rate - 20.0).abs() < 1e-9, "{rate}");
        // A caller's mistakes spend none of it.
        assert_eq!(burn_rate(&figures(1000, &[("invalid_field", 500)])), Some(0.0));
        assert_eq!(burn_rate(&figures(0, &[])), None);
    }

    #[test]
    fn production_has_the_slas_rules_and_a_required_sla_cannot_be_kept_off() {
        let names = |rules: &[Rule]| rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let none = MonitoringSettings::default();
        let rules = rules_for("production", Task::BinaryClassification, false, &none, false);
        assert_eq!(
            names(&rules),
            [
                "error_rate",
                "latency_p99",
                "availability_fast_burn",
                "availability_slow_burn",
                "accuracy_drop"
            ]
        );
        let burn: Vec<(i64, f64, &str)> = rules
            .iter()
            .filter(|r| r.series == Series::BurnRate)
            .map(|r| (r.window_us / MINUTE_US, r.threshold, r.severity.as_str()))
            .collect();
        assert_eq!(burn, [(60, 14.4, "critical"), (360, 6.0, "warning")]);
        assert_eq!(rules[1].threshold, 1000.0, "p99 above 1 s");
        assert!(rules_for("staging", Task::Regression, true, &none, false).is_empty());
        assert!(
            names(&rules_for("production", Task::Regression, true, &none, false))
                .contains(&"freshness".to_string())
        );

        // A team turned the error rate off and loosened the latency rule, then the policy came
        // to require the SLA's rules: the evaluation holds both to the SLA; a tighter override
        // stays.
        let mut tuned = MonitoringSettings::default();
        tuned.sla.insert(
            "error_rate".into(),
            plinth_api::monitoring::RuleOverride { disabled: true, ..Default::default() },
        );
        tuned.sla.insert(
            "latency_p99".into(),
            plinth_api::monitoring::RuleOverride { threshold: Some(5000.0), ..Default::default() },
        );
        tuned.sla.insert(
            "accuracy_drop".into(),
            plinth_api::monitoring::RuleOverride { threshold: Some(0.01), ..Default::default() },
        );
        let free = rules_for("production", Task::BinaryClassification, false, &tuned, false);
        assert!(!names(&free).contains(&"error_rate".to_string()));
        let held = rules_for("production", Task::BinaryClassification, false, &tuned, true);
        let by = |n: &str| held.iter().find(|r| r.name == n).unwrap().threshold;
        assert_eq!(
            (by("error_rate"), by("latency_p99"), by("accuracy_drop")),
            (0.05, 1000.0, 0.01)
        );
    }
}
