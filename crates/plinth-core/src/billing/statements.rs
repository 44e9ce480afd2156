//! Monthly statements: a team's ledger of a month priced by its plan of that month.
//!
//! Predictions are priced for the team as a whole by the plan's graduated tiers (the free
//! allowance first: the month's first `free_predictions` units cost nothing; each later unit at
//! its own tier's rate), then shared out to the models and deployments that served them in
//! proportion to their predictions (largest remainder, to the millionth of a dollar, so the
//! lines add up to the tiers exactly). Compute, memory and storage are priced per line at the
//! plan's rates. Amounts are kept in millionths of a dollar; the total is the sum of the lines.
//!
//! A month is open while it runs (its statement is the figures so far) and is closed by a
//! scheduled task after it ends: the statement is written once with the plan it was priced by
//! and never changes, whatever arrives later.

use std::collections::BTreeMap;

use plinth_api::billing::{
    ModelCost, Plan, PredictionCharge, Statement, StatementLine, StatementSummary, TierCharge,
};
use plinth_api::identity::TeamRole;
use serde_json::json;

use super::metering::{MONTH_HOURS, UsageRow};
use super::{MonthId, usd};
use crate::Plinth;
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{micros_to_time, now_micros};

pub(crate) const CLOSE_MONTHS: &str = "billing.close_months";

/// A statement before it is dressed for the wire: amounts in millionths of a dollar.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Priced {
    pub charge: PredictionCharge,
    pub lines: Vec<(StatementLine, i64)>,
    pub total_micro: i64,
}

/// The month's `total` units priced by the plan's free allowance and graduated tiers: the
/// tiers' charges and their sum, in millionths of a dollar.
pub(crate) fn tier_charges(plan: &Plan, total: u64) -> (Vec<TierCharge>, i64) {
    let mut out = Vec::new();
    let mut sum: i64 = 0;
    let free = plan.free_predictions;
    if free > 0 {
        out.push(TierCharge {
            from: 1,
            to: Some(free),
            units: total.min(free),
            usd_per_million: 0.0,
            amount_usd: 0.0,
        });
    }
    let mut lower = free;
    for t in &plan.tiers {
        let upper = t.up_to.unwrap_or(u64::MAX);
        let units = total.clamp(lower, upper) - lower;
        // units x dollars per million units = millionths of a dollar.
        let micro = (units as f64 * t.usd_per_million).round() as i64;
        sum = sum.saturating_add(micro);
        out.push(TierCharge {
            from: lower + 1,
            to: t.up_to,
            units,
            usd_per_million: t.usd_per_million,
            amount_usd: usd(micro),
        });
        lower = upper;
        if upper == u64::MAX {
            break;
        }
    }
    (out, sum)
}

/// Shares `amount` out in proportion to `weights` (largest remainder): the parts add up to
/// `amount` exactly.
fn share(amount: i64, weights: &[u64]) -> Vec<i64> {
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if total == 0 || amount <= 0 {
        return vec![0; weights.len()];
    }
    let amount = amount as u128;
    let mut parts: Vec<(usize, u128, u128)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let exact = amount * u128::from(*w);
            (i, exact / total, exact % total)
        })
        .collect();
    let given: u128 = parts.iter().map(|p| p.1).sum();
    let mut left = amount - given;
    let mut by_remainder: Vec<usize> = (0..parts.len()).collect();
    by_remainder.sort_by(|a, b| parts[*b].2.cmp(&parts[*a].2).then(a.cmp(b)));
    for i in by_remainder {
        if left == 0 {
            break;
        }
        parts[i].1 += 1;
        left -= 1;
    }
    parts.sort_by_key(|p| p.0);
    parts.into_iter().map(|p| p.1 as i64).collect()
}

/// Rounds a quantity for display (to the millionth).
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Prices a month's ledger rows by a plan.
pub(crate) fn price(plan: &Plan, rows: &[UsageRow]) -> Priced {
    // Keyed by (model, subject).
    let mut served: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new(); // requests, rows
    let mut cpu: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut memory: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut training: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new(); // cpu, runs
    let mut storage: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for r in rows {
        let key = (r.model.clone(), r.subject.clone());
        match r.item.as_str() {
            "predictions" | "shadow" => {
                if r.item == "predictions" {
                    let s = served.entry(key.clone()).or_default();
                    s.0 += r.requests;
                    s.1 += r.rows_ok;
                }
                *cpu.entry(key.clone()).or_default() += r.cpu_us;
                *memory.entry(key).or_default() += r.byte_seconds;
            }
            "training" => {
                let t = training.entry(key).or_default();
                t.0 += r.cpu_us;
                t.1 += r.runs;
            }
            item => {
                *storage
                    .entry((item.to_string(), r.model.clone(), r.subject.clone()))
                    .or_default() += r.byte_seconds;
            }
        }
    }
    let requests: u64 = served.values().map(|s| s.0).sum();
    let total: u64 = served.values().map(|s| s.1).sum();
    let (tiers, charged) = tier_charges(plan, total);
    let free = total.min(plan.free_predictions);
    let charge = PredictionCharge {
        requests,
        predictions: total,
        free,
        billed: total - free,
        tiers,
        amount_usd: usd(charged),
    };
    let named = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let mut lines: Vec<(StatementLine, i64)> = Vec::new();
    let keys: Vec<&(String, String)> = served.keys().collect();
    let weights: Vec<u64> = served.values().map(|s| s.1).collect();
    for (key, micro) in keys.iter().zip(share(charged, &weights)) {
        let quantity = served[*key].1;
        lines.push((
            StatementLine {
                item: "predictions".into(),
                model: named(&key.0),
                subject: named(&key.1),
                quantity: quantity as f64,
                unit: "predictions".into(),
                rate_usd: if quantity == 0 { 0.0 } else { usd(micro) / quantity as f64 },
                amount_usd: usd(micro),
            },
            micro,
        ));
    }
    let mut priced_line =
        |item: &str, model: &str, subject: &str, quantity: f64, unit: &str, rate: f64| {
            if quantity <= 0.0 {
                return;
            }
            let micro = (quantity * rate * 1e6).round() as i64;
            lines.push((
                StatementLine {
                    item: item.into(),
                    model: named(model),
                    subject: named(subject),
                    quantity: round6(quantity),
                    unit: unit.into(),
                    rate_usd: rate,
                    amount_usd: usd(micro),
                },
                micro,
            ));
        };
    for ((model, subject), us) in &cpu {
        let hours = *us as f64 / 3.6e9;
        priced_line("serving_compute", model, subject, hours, "vCPU-hours", plan.vcpu_hour_usd);
    }
    for ((model, subject), bs) in &memory {
        let gb_hours = *bs as f64 / 1e9 / 3600.0;
        priced_line(
            "serving_memory",
            model,
            subject,
            gb_hours,
            "GB-hours",
            plan.memory_gb_hour_usd,
        );
    }
    for ((model, recipe), (us, _runs)) in &training {
        let hours = *us as f64 / 3.6e9;
        priced_line("training", model, recipe, hours, "vCPU-hours", plan.vcpu_hour_usd);
    }
    for ((item, model, subject), bs) in &storage {
        let gb_months = *bs as f64 / 1e9 / 3600.0 / MONTH_HOURS;
        let item = format!("storage_{item}");
        priced_line(&item, model, subject, gb_months, "GB-months", plan.storage_gb_month_usd);
    }
    let total_micro = lines.iter().fold(0i64, |t, (_, m)| t.saturating_add(*m));
    Priced { charge, lines, total_micro }
}

/// The per-model view of a statement's lines.
fn model_costs(lines: &[(StatementLine, i64)]) -> Vec<ModelCost> {
    let mut by: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    for (l, micro) in lines {
        let Some(model) = &l.model else { continue };
        let e = by.entry(model.clone()).or_default();
        e.1 = e.1.saturating_add(*micro);
        if l.item == "predictions" {
            e.0 += l.quantity as u64;
        }
    }
    by.into_iter()
        .map(|(model, (predictions, micro))| ModelCost {
            model,
            predictions,
            amount_usd: usd(micro),
            cost_per_1000_predictions_usd: (predictions > 0)
                .then(|| usd(micro) * 1000.0 / predictions as f64),
        })
        .collect()
}

impl Plinth {
    /// A team's statement of `month`: the closed one, or the figures so far.
    pub(crate) async fn statement_of(
        &self,
        team: &TeamRef,
        month: MonthId,
        now: i64,
    ) -> Result<Statement> {
        if let Some(r) = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT body FROM statements WHERE team_id = $1 AND month = $2",
                [team.id.clone().into(), month.to_string().into()],
            ))
            .await?
        {
            return Ok(serde_json::from_str(&col::<String>(&r, "body")?)?);
        }
        if month > MonthId::of(now) {
            return Err(Error::invalid("month", format!("{month} has not begun")));
        }
        self.price_month(team, month).await
    }

    async fn price_month(&self, team: &TeamRef, month: MonthId) -> Result<Statement> {
        let plan = self.plan_of(&team.id, month).await?;
        let rows = self.usage_rows(&team.id, month).await?;
        let priced = price(&plan, &rows);
        let budget = self.team_limits(&team.id).await?.budget_micro_usd.map(usd);
        Ok(Statement {
            team: team.name.clone(),
            month: month.to_string(),
            status: "open".into(),
            closed_at: None,
            currency: "USD".into(),
            predictions: priced.charge.clone(),
            models: model_costs(&priced.lines),
            lines: priced.lines.into_iter().map(|(l, _)| l).collect(),
            total_usd: usd(priced.total_micro),
            budget_usd: budget,
            plan,
        })
    }

    /// A team's statement of a month (this month when none), for its members.
    pub async fn statement(
        &self,
        who: &Principal,
        team: &str,
        month: Option<&str>,
    ) -> Result<Statement> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Viewer, "reading statements")?;
        let now = now_micros();
        let month = MonthId::or_now("month", month, now)?;
        self.statement_of(&team, month, now).await
    }

    /// A team's months with usage or a statement, newest first.
    pub async fn statements(&self, who: &Principal, team: &str) -> Result<Vec<StatementSummary>> {
        let team_ref = self.team_ref(who, team).await?;
        who.require(&team_ref, TeamRole::Viewer, "reading statements")?;
        let now = now_micros();
        let mut months: Vec<MonthId> = self
            .db
            .fetch_all(&Sql::with(
                "SELECT DISTINCT month FROM usage_months WHERE team_id = $1 UNION SELECT month FROM statements WHERE team_id = $1",
                [team_ref.id.clone().into()],
            ))
            .await?
            .iter()
            .map(|r| MonthId::parse("month", &col::<String>(r, "month")?))
            .collect::<Result<_>>()?;
        let this = MonthId::of(now);
        if !months.contains(&this) {
            months.push(this);
        }
        months.sort();
        months.reverse();
        let mut out = Vec::new();
        for m in months.into_iter().take(36) {
            let s = self.statement_of(&team_ref, m, now).await?;
            out.push(StatementSummary {
                month: s.month,
                status: s.status,
                total_usd: s.total_usd,
                predictions: s.predictions.predictions,
            });
        }
        Ok(out)
    }

    /// Every team's statement of a month, for finance (admins): the chargeback export.
    pub async fn all_statements(
        &self,
        who: &Principal,
        month: Option<&str>,
    ) -> Result<Vec<Statement>> {
        who.require_admin("exporting every team's statements")?;
        let now = now_micros();
        let month = MonthId::or_now("month", month, now)?;
        let mut out = Vec::new();
        for team in self.all_team_refs().await? {
            out.push(self.statement_of(&team, month, now).await?);
        }
        Ok(out)
    }

    pub(crate) async fn all_team_refs(&self) -> Result<Vec<TeamRef>> {
        self.db
            .fetch_all(&Sql::new("SELECT id, name FROM teams ORDER BY name"))
            .await?
            .iter()
            .map(|r| Ok(TeamRef { id: col(r, "id")?, name: col(r, "name")? }))
            .collect()
    }

    /// Closes every month before the one `now` falls in that has no statement yet: the
    /// previous month for every team, and any earlier month with usage. Answers how many
    /// statements it wrote. The schedule calls it after each month ends; tests drive it.
    pub async fn close_months_at(&self, now: i64) -> Result<usize> {
        let this = MonthId::of(now);
        let mut due: Vec<(TeamRef, MonthId)> = Vec::new();
        let teams = self.all_team_refs().await?;
        for t in &teams {
            due.push((t.clone(), this.prev()));
        }
        for r in self
            .db
            .fetch_all(&Sql::with(
                "SELECT DISTINCT u.team_id, u.month FROM usage_months u
                 WHERE u.month < $1 AND NOT EXISTS (SELECT 1 FROM statements s WHERE s.team_id = u.team_id AND s.month = u.month)",
                [this.to_string().into()],
            ))
            .await?
        {
            let team_id: String = col(&r, "team_id")?;
            let month = MonthId::parse("month", &col::<String>(&r, "month")?)?;
            if let Some(t) = teams.iter().find(|t| t.id == team_id)
                && month != this.prev()
            {
                due.push((t.clone(), month));
            }
        }
        let mut closed = 0;
        for (team, month) in due {
            let mut s = self.statement_of(&team, month, now).await?;
            if s.status == "closed" {
                continue;
            }
            s.status = "closed".into();
            s.closed_at = Some(micros_to_time(now));
            let mut tx = self.db.begin().await?;
            let n = Sql::with(
                "INSERT INTO statements (team_id, month, body, closed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (team_id, month) DO NOTHING",
                [team.id.clone().into(), month.to_string().into(), serde_json::to_string(&s)?.into(), now.into()],
            )
            .execute(&mut tx)
            .await?;
            if n > 0 {
                self.emit_event(
                    &mut tx,
                    Some(&team.id),
                    "statement.closed",
                    &json!({"team": team.name, "month": month.to_string(), "total_usd": s.total_usd,
                            "predictions": s.predictions.predictions}),
                )
                .await?;
                closed += 1;
            }
            tx.commit().await?;
        }
        Ok(closed)
    }
}

/// Closes the months that ended (the schedule runs it on the first of each month).
pub(crate) struct CloseMonths;

impl crate::tasks::TaskKind for CloseMonths {
    fn name(&self) -> &'static str {
        CLOSE_MONTHS
    }

    fn run<'a>(
        &'a self,
        core: &'a Plinth,
        _task: &'a crate::tasks::TaskRun,
    ) -> futures_util::future::BoxFuture<'a, Result<serde_json::Value>> {
        Box::pin(async move {
            let closed = core.close_months_at(now_micros()).await?;
            Ok(json!({ "closed": closed }))
        })
    }
}

/// Statements as CSV, one row per line and a total row per statement: the chargeback export.
pub fn statements_csv(statements: &[Statement]) -> String {
    let mut out = String::from(
        "month,team,plan,status,item,model,subject,quantity,unit,rate_usd,amount_usd\n",
    );
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for s in statements {
        for l in &s.lines {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{:.6}\n",
                s.month,
                field(&s.team),
                field(&s.plan.name),
                s.status,
                l.item,
                field(l.model.as_deref().unwrap_or("")),
                field(l.subject.as_deref().unwrap_or("")),
                l.quantity,
                l.unit,
                l.rate_usd,
                l.amount_usd
            ));
        }
        out.push_str(&format!(
            "{},{},{},{},total,,,,,,{:.6}\n",
            s.month,
            field(&s.team),
            field(&s.plan.name),
            s.status,
            s.total_usd
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use plinth_api::billing::Tier;

    use super::*;
    use crate::billing::plans::builtin_plans;

    fn plan(name: &str) -> Plan {
        builtin_plans().into_iter().find(|p| p.name == name).unwrap()
    }

    fn served(model: &str, env: &str, rows: u64) -> UsageRow {
        UsageRow {
            item: "predictions".into(),
            model: model.into(),
            subject: env.into(),
            version: 1,
            requests: rows,
            rows_ok: rows,
            cpu_us: 0,
            byte_seconds: 0,
            runs: 0,
        }
    }

    #[test]
    fn the_free_allowance_ends_at_its_last_unit() {
        let standard = plan("standard");
        assert_eq!(tier_charges(&standard, 100_000).1, 0, "the 100,000th is free");
        // $10 per million: one unit is ten millionths of a dollar.
        assert_eq!(tier_charges(&standard, 100_001).1, 10, "the 100,001st is billed");
        assert_eq!(tier_charges(&standard, 1_100_000).1, 10_000_000, "a million billed: $10");
    }

    #[test]
    fn graduated_tiers_charge_each_unit_at_its_own_rate() {
        // Stripe's example: 15,000 units at 1,000 @ $0.10, 9,000 @ $0.05, the rest @ $0.01.
        let p = Plan {
            name: "x".into(),
            description: String::new(),
            free_predictions: 0,
            tiers: vec![
                Tier { up_to: Some(1_000), usd_per_million: 100_000.0 },
                Tier { up_to: Some(10_000), usd_per_million: 50_000.0 },
                Tier { up_to: None, usd_per_million: 10_000.0 },
            ],
            vcpu_hour_usd: 0.0,
            memory_gb_hour_usd: 0.0,
            storage_gb_month_usd: 0.0,
            quotas: Default::default(),
        };
        let (tiers, micro) = tier_charges(&p, 15_000);
        assert_eq!(micro, 600_000_000, "graduated: $600");
        assert_eq!(tiers.iter().map(|t| t.units).collect::<Vec<_>>(), [1_000, 9_000, 5_000]);
        // Enterprise, by hand: 100 K free, 9.9 M at $10, 90 M at $8, 5 M at $5.
        let (_, micro) = tier_charges(&plan("enterprise"), 105_000_000);
        assert_eq!(micro, (99.0 + 720.0 + 25.0) as i64 * 1_000_000);
    }

    #[test]
    fn lines_add_up_to_the_tiers() {
        let rows = vec![
            served("a", "production", 70_001),
            served("b", "production", 33_334),
            served("b", "staging", 1),
        ];
        let p = price(&plan("standard"), &rows);
        assert_eq!(p.charge.predictions, 103_336);
        assert_eq!(p.charge.billed, 3_336);
        let lines: i64 =
            p.lines.iter().filter(|(l, _)| l.item == "predictions").map(|(_, m)| m).sum();
        assert_eq!(lines, 33_360);
        assert_eq!(p.total_micro, 33_360);
    }

    #[test]
    fn shares_add_up() {
        assert_eq!(share(10, &[1, 1, 1]), [4, 3, 3]);
        assert_eq!(share(0, &[1, 2]), [0, 0]);
        assert_eq!(share(7, &[0, 0]), [0, 0]);
        let parts = share(1_000_003, &[3, 7, 11, 13]);
        assert_eq!(parts.iter().sum::<i64>(), 1_000_003);
    }
}
