//! Cost allocation and the platform's own numbers.
//!
//! - [`metering`]: what each team uses, per model, deployment and version: predictions and
//!   serving CPU time (counted by the serving engine in memory, added to `usage_months` with
//!   each health rollup), loaded models' memory, training CPU time per run, and storage
//!   sampled every hour.
//! - [`plans`]: the price book, each team's plan (changes take effect next month), its own
//!   limits and budget.
//! - [`statements`]: a team's month priced by its plan, line by line; months close by
//!   themselves and a closed statement never changes.
//! - [`quotas`]: limits enforced on the prediction path from memory, and budget alerts.
//! - [`kpi`]: the platform report (adoption, quality, business, delivery, satisfaction).

pub mod kpi;
pub mod metering;
pub mod plans;
pub mod quotas;
pub mod statements;

use time::{Date, Month, OffsetDateTime, Time};

use crate::Plinth;
use crate::error::{Error, Result};
use crate::tasks::schedule::{Cron, Every};
use crate::util::micros_to_time;

/// Registers billing's task kinds.
pub(crate) fn register(r: &mut crate::tasks::Registry) {
    r.register(statements::CloseMonths);
    r.register(metering::MeterStorage);
    r.register(quotas::CheckBudgets);
}

/// Creates billing's schedules unless they exist: storage sampled hourly, budgets checked every
/// minute, months closed at five past midnight (UTC) on the first.
pub(crate) async fn ensure_schedules(core: &Plinth) -> Result<()> {
    core.ensure_schedule(metering::METER_STORAGE, metering::METER_STORAGE, Every::Interval(3600))
        .await?;
    core.ensure_schedule(quotas::CHECK_BUDGETS, quotas::CHECK_BUDGETS, Every::Interval(60)).await?;
    core.ensure_schedule(
        statements::CLOSE_MONTHS,
        statements::CLOSE_MONTHS,
        Every::Cron(Cron::parse("5 0 1 * *")?),
    )
    .await
}

/// A calendar month (UTC), written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MonthId {
    pub year: i32,
    pub month: u8,
}

impl MonthId {
    /// The month a time (microseconds since the epoch) falls in.
    pub fn of(micros: i64) -> MonthId {
        let t = micros_to_time(micros);
        MonthId { year: t.year(), month: t.month() as u8 }
    }

    /// Reads `YYYY-MM`; `field` names it in the error.
    pub fn parse(field: &str, s: &str) -> Result<MonthId> {
        let bad = || Error::invalid(field, format!("'{s}' is not a month: write YYYY-MM"));
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u8 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(MonthId { year, month })
    }

    /// `month` of the query, or the month of `now`.
    pub fn or_now(field: &str, s: Option<&str>, now: i64) -> Result<MonthId> {
        s.map_or(Ok(MonthId::of(now)), |s| MonthId::parse(field, s))
    }

    pub fn next(self) -> MonthId {
        if self.month == 12 {
            MonthId { year: self.year + 1, month: 1 }
        } else {
            MonthId { year: self.year, month: self.month + 1 }
        }
    }

    pub fn prev(self) -> MonthId {
        if self.month == 1 {
            MonthId { year: self.year - 1, month: 12 }
        } else {
            MonthId { year: self.year, month: self.month - 1 }
        }
    }

    /// The month's first microsecond.
    pub fn start(self) -> i64 {
        let month = Month::try_from(self.month).unwrap_or(Month::January);
        let date = Date::from_calendar_date(self.year, month, 1).unwrap_or(Date::MIN);
        let t = OffsetDateTime::new_utc(date, Time::MIDNIGHT);
        (t.unix_timestamp_nanos() / 1000) as i64
    }

    /// The next month's first microsecond.
    pub fn end(self) -> i64 {
        self.next().start()
    }
}

impl Default for MonthId {
    fn default() -> Self {
        MonthId { year: 1970, month: 1 }
    }
}

impl std::fmt::Display for MonthId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Dollars from millionths of a dollar.
pub(crate) fn usd(micro: i64) -> f64 {
    micro as f64 / 1e6
}

/// Millionths of a dollar, rounded, from dollars (a budget as given).
pub(crate) fn micro_usd(usd: f64) -> i64 {
    (usd * 1e6).round() as i64
}

#[cfg(test)]
mod tests {
    use super::MonthId;

    #[test]
    fn months_parse_and_bound() {
        let m = MonthId::parse("month", "2026-12").unwrap();
        assert_eq!(m.to_string(), "2026-12");
        assert_eq!(m.next().to_string(), "2027-01");
        assert_eq!(m.prev().to_string(), "2026-11");
        assert_eq!(m.end() - m.start(), 31 * 86_400_000_000);
        assert_eq!(MonthId::of(m.start()), m);
        assert_eq!(MonthId::of(m.end() - 1), m);
        assert_eq!(MonthId::of(m.end()), m.next());
        for bad in ["2026-13", "26-01", "2026-1", "2026_01", "x"] {
            let e = MonthId::parse("month", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("month"), "{bad}");
        }
    }
}
