//! The price book and each team's place in it: plans (three built in, edited by admins), a
//! team's plan by month (a change takes effect at the next month), its own limits (in force at
//! once) and its monthly budget. Every change is audited.

use std::collections::HashMap;

use plinth_api::billing::{LimitsUpdate, Plan, PlanChange, Quotas, TeamBilling, Tier};
use plinth_api::identity::TeamRole;
use serde_json::json;

use super::{MonthId, micro_usd, usd};
use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{check_name, now_micros};

/// The plan of a team that never chose one.
pub const DEFAULT_PLAN: &str = "standard";

/// OpenCost's default prices: per vCPU-hour, per GB-hour of memory, per GB-month of storage.
const VCPU_HOUR: f64 = 0.031611;
const MEMORY_GB_HOUR: f64 = 0.004237;
const STORAGE_GB_MONTH: f64 = 0.04;

/// The built-in plans, as the price book holds them until an admin edits one.
pub fn builtin_plans() -> Vec<Plan> {
    let rates = |name: &str, description: &str, free: u64, tiers: Vec<Tier>, quotas: Quotas| Plan {
        name: name.into(),
        description: description.into(),
        free_predictions: free,
        tiers,
        vcpu_hour_usd: VCPU_HOUR,
        memory_gb_hour_usd: MEMORY_GB_HOUR,
        storage_gb_month_usd: STORAGE_GB_MONTH,
        quotas,
    };
    vec![
        Plan {
            vcpu_hour_usd: 0.0,
            memory_gb_hour_usd: 0.0,
            storage_gb_month_usd: 0.0,
            ..rates(
                "free",
                "100,000 predictions a month at no cost; then calls are refused until the next month",
                100_000,
                Vec::new(),
                Quotas {
                    predictions_per_month: Some(100_000),
                    requests_per_second: Some(100),
                    storage_bytes: Some(10_000_000_000),
                },
            )
        },
        rates(
            "standard",
            "100,000 predictions a month free, then $10 per million; compute and storage at OpenCost's default rates",
            100_000,
            vec![Tier { up_to: None, usd_per_million: 10.0 }],
            Quotas::default(),
        ),
        rates(
            "enterprise",
            "volume tiers: $10 per million up to 10 M a month, $8 up to 100 M, $5 beyond",
            100_000,
            vec![
                Tier { up_to: Some(10_000_000), usd_per_million: 10.0 },
                Tier { up_to: Some(100_000_000), usd_per_million: 8.0 },
                Tier { up_to: None, usd_per_million: 5.0 },
            ],
            Quotas::default(),
        ),
    ]
}

/// The highest price a plan may state for one unit (a million predictions, an hour, a
/// GB-month): far above any real price, low enough that no month's amount overflows.
const MAX_PRICE: f64 = 1_000_000.0;

/// Checks a plan as an admin sends it: tiers ascending, only the last one open, rates finite
/// and not negative.
fn check_plan(p: &Plan) -> Result<()> {
    check_name("name", &p.name)?;
    if p.description.len() > 1000 {
        return Err(Error::invalid("description", "at most 1000 characters"));
    }
    let rate = |field: &str, v: f64| {
        if v.is_finite() && (0.0..=MAX_PRICE).contains(&v) {
            Ok(())
        } else {
            Err(Error::invalid(
                field,
                format!("a price is a number of dollars from 0 to {MAX_PRICE}"),
            ))
        }
    };
    rate("vcpu_hour_usd", p.vcpu_hour_usd)?;
    rate("memory_gb_hour_usd", p.memory_gb_hour_usd)?;
    rate("storage_gb_month_usd", p.storage_gb_month_usd)?;
    let mut last = p.free_predictions;
    for (i, t) in p.tiers.iter().enumerate() {
        rate(&format!("tiers[{i}].usd_per_million"), t.usd_per_million)?;
        match t.up_to {
            Some(up) if up <= last => {
                return Err(Error::invalid(
                    format!("tiers[{i}].up_to"),
                    format!("must be above {last} (the free allowance and earlier tiers)"),
                ));
            }
            Some(_) if i + 1 == p.tiers.len() => {
                return Err(Error::invalid(
                    format!("tiers[{i}].up_to"),
                    "the last tier has no upper bound (leave up_to out)",
                ));
            }
            None if i + 1 < p.tiers.len() => {
                return Err(Error::invalid(
                    format!("tiers[{i}].up_to"),
                    "only the last tier may be unbounded",
                ));
            }
            Some(up) => last = up,
            None => {}
        }
    }
    check_quotas("quotas", &p.quotas)
}

fn check_quotas(field: &str, q: &Quotas) -> Result<()> {
    if q.requests_per_second == Some(0) {
        return Err(Error::invalid(
            format!("{field}.requests_per_second"),
            "must be at least 1 (leave it out for no limit)",
        ));
    }
    Ok(())
}

fn limits_from_row(r: &sqlx::any::AnyRow) -> Result<TeamLimits> {
    let u = |name: &str| col::<Option<i64>>(r, name).map(|v| v.map(|n| n.max(0) as u64));
    Ok(TeamLimits {
        quotas: Quotas {
            predictions_per_month: u("predictions_per_month")?,
            requests_per_second: u("requests_per_second")?,
            storage_bytes: u("storage_bytes")?,
        },
        budget_micro_usd: col(r, "budget_micro_usd")?,
    })
}

/// A team's own limits over its plan's.
fn in_force(own: &Quotas, plan: &Quotas) -> Quotas {
    Quotas {
        predictions_per_month: own.predictions_per_month.or(plan.predictions_per_month),
        requests_per_second: own.requests_per_second.or(plan.requests_per_second),
        storage_bytes: own.storage_bytes.or(plan.storage_bytes),
    }
}

/// A team, its own limits and the limits in force for it in a month.
pub(crate) struct TeamTerms {
    pub team: TeamRef,
    pub limits: TeamLimits,
    pub quotas: Quotas,
}

/// A team's own limits and budget, as stored.
#[derive(Debug, Clone, Default)]
pub(crate) struct TeamLimits {
    pub quotas: Quotas,
    pub budget_micro_usd: Option<i64>,
}

impl Plinth {
    /// Every plan of the price book: the built-in ones as edited, and the admins' own.
    pub async fn plans(&self) -> Result<Vec<Plan>> {
        let mut plans = builtin_plans();
        for r in self.db.fetch_all(&Sql::new("SELECT spec FROM plans ORDER BY name")).await? {
            let p: Plan = serde_json::from_str(&col::<String>(&r, "spec")?)?;
            match plans.iter_mut().find(|b| b.name == p.name) {
                Some(b) => *b = p,
                None => plans.push(p),
            }
        }
        Ok(plans)
    }

    /// A plan of the price book by name.
    pub async fn plan(&self, name: &str) -> Result<Plan> {
        self.plans()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::not_found("plan", name))
    }

    /// Creates or replaces a plan (admins). Open months are priced by the plan as it is now;
    /// closed statements keep the plan they were closed with.
    pub async fn put_plan(&self, who: &Principal, name: &str, plan: Plan) -> Result<Plan> {
        who.require_admin("editing the price book")?;
        if plan.name != name {
            return Err(Error::invalid("name", format!("must be '{name}', the plan in the path")));
        }
        check_plan(&plan)?;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO plans (name, spec, updated_at, updated_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            [name.into(), serde_json::to_string(&plan)?.into(), now_micros().into(), who.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        audit::record(
            &mut tx,
            who,
            "plan.put",
            Target { team_id: None, object_type: "plan", object_id: name, object_name: name },
            serde_json::to_value(&plan)?,
        )
        .await?;
        tx.commit().await?;
        Ok(plan)
    }

    /// The name of a team's plan in `month`.
    pub(crate) async fn plan_name_of(&self, team_id: &str, month: MonthId) -> Result<String> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT plan FROM team_plans WHERE team_id = $1 AND effective_month <= $2 ORDER BY effective_month DESC LIMIT 1",
                [team_id.into(), month.to_string().into()],
            ))
            .await?;
        Ok(row.map(|r| col::<String>(&r, "plan")).transpose()?.unwrap_or(DEFAULT_PLAN.into()))
    }

    /// A team's plan in `month`, from the price book (a plan since removed from it prices as
    /// the default plan).
    pub(crate) async fn plan_of(&self, team_id: &str, month: MonthId) -> Result<Plan> {
        let name = self.plan_name_of(team_id, month).await?;
        let plans = self.plans().await?;
        Ok(match plans.iter().find(|p| p.name == name) {
            Some(p) => p.clone(),
            None => plans.into_iter().find(|p| p.name == DEFAULT_PLAN).expect("built in"),
        })
    }

    pub(crate) async fn team_limits(&self, team_id: &str) -> Result<TeamLimits> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT predictions_per_month, requests_per_second, storage_bytes, budget_micro_usd FROM team_limits WHERE team_id = $1",
                [team_id.into()],
            ))
            .await?;
        row.as_ref().map_or(Ok(TeamLimits::default()), limits_from_row)
    }

    /// The limits in force for a team this month: its own, else its plan's.
    pub(crate) async fn quotas_in_force(&self, team_id: &str, month: MonthId) -> Result<Quotas> {
        let own = self.team_limits(team_id).await?.quotas;
        let plan = self.plan_of(team_id, month).await?.quotas;
        Ok(in_force(&own, &plan))
    }

    /// Every team with its limits in force and its own limits in `month`, in three reads
    /// (the quota sync and the budget check run it for every team).
    pub(crate) async fn all_team_terms(&self, month: MonthId) -> Result<Vec<TeamTerms>> {
        let plans = self.plans().await?;
        let mut plan_names: HashMap<String, String> = HashMap::new();
        for r in self
            .db
            .fetch_all(&Sql::with(
                "SELECT team_id, plan FROM team_plans WHERE effective_month <= $1 ORDER BY effective_month",
                [month.to_string().into()],
            ))
            .await?
        {
            // Ordered by month: the last one of a team is in force.
            plan_names.insert(col(&r, "team_id")?, col(&r, "plan")?);
        }
        let mut own: HashMap<String, TeamLimits> = HashMap::new();
        for r in self
            .db
            .fetch_all(&Sql::new(
                "SELECT team_id, predictions_per_month, requests_per_second, storage_bytes, budget_micro_usd FROM team_limits",
            ))
            .await?
        {
            own.insert(col(&r, "team_id")?, limits_from_row(&r)?);
        }
        let default = plans.iter().find(|p| p.name == DEFAULT_PLAN).expect("built in");
        Ok(self
            .all_team_refs()
            .await?
            .into_iter()
            .map(|team| {
                let name = plan_names.get(&team.id).map_or(DEFAULT_PLAN, String::as_str);
                let plan = plans.iter().find(|p| p.name == name).unwrap_or(default);
                let limits = own.remove(&team.id).unwrap_or_default();
                TeamTerms { quotas: in_force(&limits.quotas, &plan.quotas), limits, team }
            })
            .collect())
    }

    /// A team's billing: plan, limits, budget and this month so far (its members).
    pub async fn team_billing(&self, who: &Principal, team: &str) -> Result<TeamBilling> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Viewer, "reading the team's billing")?;
        let now = now_micros();
        let month = MonthId::of(now);
        let plan = self.plan_name_of(&team.id, month).await?;
        let next = self.plan_name_of(&team.id, month.next()).await?;
        let limits = self.team_limits(&team.id).await?;
        let statement = self.statement_of(&team, month, now).await?;
        Ok(TeamBilling {
            team: team.name.clone(),
            quotas: self.quotas_in_force(&team.id, month).await?,
            own_quotas: limits.quotas,
            budget_usd: limits.budget_micro_usd.map(usd),
            next_plan: (next != plan).then_some(next),
            plan,
            month: month.to_string(),
            predictions_this_month: statement.predictions.predictions,
            cost_this_month_usd: statement.total_usd,
            storage_bytes: self.stored_bytes(&team.id).await?,
        })
    }

    /// Moves a team to another plan from the next month on (admins).
    pub async fn change_plan(
        &self,
        who: &Principal,
        team: &str,
        change: PlanChange,
    ) -> Result<TeamBilling> {
        who.require_admin("changing a team's plan")?;
        let team_ref = self.team_ref(who, team).await?;
        let plan = self.plan(&change.plan).await.map_err(|_| {
            Error::invalid("plan", format!("'{}' is not a plan of the price book", change.plan))
        })?;
        let effective = MonthId::of(now_micros()).next();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO team_plans (team_id, effective_month, plan, changed_at, changed_by) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (team_id, effective_month) DO UPDATE SET plan = excluded.plan, changed_at = excluded.changed_at, changed_by = excluded.changed_by",
            [team_ref.id.clone().into(), effective.to_string().into(), plan.name.clone().into(), now_micros().into(), who.id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        audit::record(
            &mut tx,
            who,
            "team.plan_change",
            Target {
                team_id: Some(&team_ref.id),
                object_type: "team",
                object_id: &team_ref.id,
                object_name: &team_ref.name,
            },
            json!({"plan": plan.name, "effective_month": effective.to_string()}),
        )
        .await?;
        tx.commit().await?;
        self.team_billing(who, team).await
    }

    /// Sets a team's own limits and budget (admins); in force at once on every replica's next
    /// sync.
    pub async fn set_team_limits(
        &self,
        who: &Principal,
        team: &str,
        update: LimitsUpdate,
    ) -> Result<TeamBilling> {
        who.require_admin("setting a team's limits")?;
        let team_ref = self.team_ref(who, team).await?;
        check_quotas("quotas", &update.quotas)?;
        if let Some(b) = update.budget_usd
            && !(b.is_finite() && b > 0.0)
        {
            return Err(Error::invalid("budget_usd", "a budget is a positive number of dollars"));
        }
        let n = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let q = &update.quotas;
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO team_limits (team_id, predictions_per_month, requests_per_second, storage_bytes, budget_micro_usd, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (team_id) DO UPDATE SET predictions_per_month = excluded.predictions_per_month,
               requests_per_second = excluded.requests_per_second, storage_bytes = excluded.storage_bytes,
               budget_micro_usd = excluded.budget_micro_usd, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            [
                team_ref.id.clone().into(),
                n(q.predictions_per_month).into(),
                n(q.requests_per_second).into(),
                n(q.storage_bytes).into(),
                update.budget_usd.map(micro_usd).into(),
                now_micros().into(),
                who.id.clone().into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        audit::record(
            &mut tx,
            who,
            "team.limits_set",
            Target {
                team_id: Some(&team_ref.id),
                object_type: "team",
                object_id: &team_ref.id,
                object_name: &team_ref.name,
            },
            serde_json::to_value(&update)?,
        )
        .await?;
        tx.commit().await?;
        self.sync_quotas().await?;
        self.team_billing(who, team).await
    }
}
