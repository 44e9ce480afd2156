//! Schedules: a task kind and its arguments, fired every interval or on a cron expression (five
//! fields, UTC). Each replica looks for due schedules; an occurrence is fired by the replica whose
//! compare-and-set of the schedule's `next_at` (from the due time to the next one) succeeds, in
//! the transaction that enqueues its task, so each occurrence fires exactly once however many
//! replicas run. No session advisory lock is involved (they break behind PgBouncer's transaction
//! pooling).
//!
//! **Missed occurrences.** When no replica ran through several occurrences, the first replica up
//! fires one task for the latest of them and moves on to the next occurrence after now: work that
//! checks the present (alerts, statements, retraining) does not need a burst of catch-ups.

use plinth_api::Code;
use serde_json::Value;

use super::NewTask;
use crate::Plinth;
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{new_id, now_micros};

const MINUTE_US: i64 = 60_000_000;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq)]
pub enum Every {
    /// Every this many seconds (at least 1).
    Interval(u64),
    /// A cron expression: minute hour day-of-month month day-of-week, in UTC.
    Cron(Cron),
}

/// A parsed five-field cron expression (`*`, lists, ranges and steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day-of-month and day-of-week were both restricted (then either matches, as cron
    /// has it).
    either_day: bool,
}

fn field(text: &str, lo: u32, hi: u32, what: &str) -> Result<u64> {
    let bad = |why: String| Error::invalid("cron", format!("{what} field '{text}': {why}"));
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                (r, s.parse::<u32>().map_err(|_| bad("the step is not a number".into()))?)
            }
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad("the step is 0".into()));
        }
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (
                    a.parse().map_err(|_| bad(format!("'{a}' is not a number")))?,
                    b.parse().map_err(|_| bad(format!("'{b}' is not a number")))?,
                ),
                None => {
                    let v: u32 = r.parse().map_err(|_| bad(format!("'{r}' is not a number")))?;
                    (v, if part.contains('/') { hi } else { v })
                }
            },
        };
        if a < lo || b > hi || a > b {
            return Err(bad(format!("values run from {lo} to {hi}")));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron> {
        let f: Vec<&str> = text.split_whitespace().collect();
        let [m, h, dom, mon, dow] = f.as_slice() else {
            return Err(Error::invalid(
                "cron",
                "five fields: minute hour day-of-month month day-of-week (UTC)",
            ));
        };
        let weekdays = field(dow, 0, 7, "day-of-week")?;
        Ok(Cron {
            text: f.join(" "),
            minutes: field(m, 0, 59, "minute")?,
            hours: field(h, 0, 23, "hour")? as u32,
            days: field(dom, 1, 31, "day-of-month")? as u32,
            months: field(mon, 1, 12, "month")? as u16,
            // 7 is Sunday too.
            weekdays: ((weekdays | (weekdays >> 7)) & 0x7f) as u8,
            either_day: *dom != "*" && *dow != "*",
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn matches(&self, t: time::OffsetDateTime) -> bool {
        let day = self.days & (1 << t.day()) != 0;
        let weekday = self.weekdays & (1 << t.weekday().number_days_from_sunday()) != 0;
        let day_ok = if self.either_day { day || weekday } else { day && weekday };
        self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.months & (1 << u8::from(t.month())) != 0
            && day_ok
    }

    /// The first matching minute after `after` (microseconds), within about five years.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let mut at = after.div_euclid(MINUTE_US) * MINUTE_US + MINUTE_US;
        for _ in 0..(5 * 366 * 24 * 60) {
            if self.matches(crate::util::micros_to_time(at)) {
                return Some(at);
            }
            at += MINUTE_US;
        }
        None
    }
}

impl Every {
    /// The first occurrence after `after` (microseconds).
    pub fn next_after(&self, after: i64) -> Result<i64> {
        match self {
            Every::Interval(s) => Ok(after + (*s as i64) * 1_000_000),
            Every::Cron(c) => c
                .next_after(after)
                .ok_or_else(|| Error::invalid("cron", format!("'{}' never occurs", c.as_str()))),
        }
    }
}

/// A schedule to create.
pub(crate) struct NewSchedule<'a> {
    /// The team it works for; `None` for the platform's own.
    pub team_id: Option<&'a str>,
    pub name: &'a str,
    pub kind: &'a str,
    pub args: &'a Value,
    pub every: Every,
    /// The first occurrence (microseconds); default: the first after now.
    pub first_at: Option<i64>,
    pub by: &'a str,
}

impl Plinth {
    /// Creates a schedule, or replaces the one of the same name in the same scope.
    pub(crate) async fn put_schedule(&self, s: NewSchedule<'_>) -> Result<String> {
        if self.tasks.registry.get(s.kind).is_none() {
            return Err(Error::internal(format!("no task kind {}", s.kind)));
        }
        let (interval, cron) = match &s.every {
            Every::Interval(0) => return Err(Error::invalid("interval_seconds", "at least 1")),
            Every::Interval(n) => (Some(*n as i64), None),
            Every::Cron(c) => (None, Some(c.as_str().to_string())),
        };
        let now = now_micros();
        let next = match s.first_at {
            Some(t) => t,
            None => s.every.next_after(now)?,
        };
        let scope = s.team_id.unwrap_or("*");
        let id = new_id("sch");
        let mut tx = self.db.begin().await?;
        Sql::with(
            "DELETE FROM schedules WHERE scope = $1 AND name = $2",
            [scope.into(), s.name.into()],
        )
        .execute(&mut tx)
        .await?;
        Sql::with(
            "INSERT INTO schedules (id, scope, team_id, name, kind, args, interval_seconds, cron, next_at, enabled, created_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11)",
            [
                id.clone().into(),
                scope.into(),
                s.team_id.map(str::to_string).into(),
                s.name.into(),
                s.kind.into(),
                s.args.to_string().into(),
                interval.into(),
                cron.into(),
                next.into(),
                now.into(),
                s.by.into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Creates the platform's own schedule `name` unless it exists (every replica calls this
    /// at start; the first one creates it, and its next occurrence stays as it was).
    pub(crate) async fn ensure_schedule(&self, name: &str, kind: &str, every: Every) -> Result<()> {
        let (interval, cron) = match &every {
            Every::Interval(n) => (Some(*n as i64), None),
            Every::Cron(c) => (None, Some(c.as_str().to_string())),
        };
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO schedules (id, scope, team_id, name, kind, args, interval_seconds, cron, next_at, enabled, created_at, created_by)
             VALUES ($1, '*', NULL, $2, $3, '{}', $4, $5, $6, 1, $7, 'system')
             ON CONFLICT (scope, name) DO NOTHING",
            [
                new_id("sch").into(),
                name.into(),
                kind.into(),
                interval.into(),
                cron.into(),
                every.next_after(now)?.into(),
                now.into(),
            ],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await
    }

    /// Fires `kind` with `args` on `every` (first at `first_at`, default the first occurrence
    /// after now), for a team (by name) or the platform; replaces the schedule of the same name.
    pub async fn schedule_task(
        &self,
        team: Option<&str>,
        name: &str,
        kind: &str,
        args: &Value,
        every: Every,
        first_at: Option<i64>,
    ) -> Result<String> {
        let team_id = match team {
            Some(t) => Some(
                self.db
                    .fetch_optional(&Sql::with("SELECT id FROM teams WHERE name = $1", [t.into()]))
                    .await?
                    .ok_or_else(|| Error::not_found("team", t))
                    .and_then(|r| col::<String>(&r, "id"))?,
            ),
            None => None,
        };
        self.put_schedule(NewSchedule {
            team_id: team_id.as_deref(),
            name,
            kind,
            args,
            every,
            first_at,
            by: "system",
        })
        .await
    }

    /// Fires every schedule due at `now` (microseconds) whose occurrence this replica wins, and
    /// answers how many it fired. Called by each replica's schedule loop with the clock's time,
    /// and by tests with the time they drive.
    #[doc(hidden)]
    pub async fn fire_due_schedules(&self, now: i64) -> Result<usize> {
        let due = self
            .db
            .fetch_all(&Sql::with(
                "SELECT id, team_id, kind, args, interval_seconds, cron, next_at FROM schedules
                 WHERE enabled = 1 AND next_at <= $1 ORDER BY next_at LIMIT 100",
                [now.into()],
            ))
            .await?;
        let mut fired = 0;
        for row in due {
            let id: String = col(&row, "id")?;
            let due_at: i64 = col(&row, "next_at")?;
            let every = match (
                col::<Option<i64>>(&row, "interval_seconds")?,
                col::<Option<String>>(&row, "cron")?,
            ) {
                (Some(s), _) => Every::Interval(s.max(1) as u64),
                (None, Some(c)) => Every::Cron(Cron::parse(&c)?),
                (None, None) => {
                    return Err(Error::new(Code::Internal, "a schedule without a time"));
                }
            };
            // The next occurrence after now: missed ones are not replayed (module doc).
            let mut next = every.next_after(due_at)?;
            while next <= now {
                next = every.next_after(next)?;
            }
            let mut tx = self.db.begin().await?;
            let won = Sql::with(
                "UPDATE schedules SET next_at = $1 WHERE id = $2 AND next_at = $3",
                [next.into(), id.clone().into(), due_at.into()],
            )
            .execute(&mut tx)
            .await?;
            if won == 0 {
                // Another replica fired this occurrence.
                continue;
            }
            let team_id: Option<String> = col(&row, "team_id")?;
            let kind: String = col(&row, "kind")?;
            let args: Value = serde_json::from_str(&col::<String>(&row, "args")?)?;
            let mut task = NewTask::new(team_id.as_deref(), &kind, &args, "system");
            task.schedule_id = Some(&id);
            self.enqueue(&mut tx, task).await?;
            tx.commit().await?;
            fired += 1;
        }
        if fired > 0 {
            self.wake_tasks();
        }
        Ok(fired)
    }

    /// Looks for due schedules every second, until the process stops.
    pub(crate) fn start_schedules(&self) {
        let core = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !core.tasks.stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                if let Err(e) = core.fire_due_schedules(now_micros()).await {
                    tracing::warn!(error = %e, "cannot fire schedules; retrying");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        crate::util::time_to_micros(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap(),
        )
    }

    #[test]
    fn cron_expressions_give_their_next_minutes() {
        let c = Cron::parse("*/15 9-17 * * 1-5").unwrap();
        // Friday 2026-12-04 17:50 -> Monday 09:00.
        assert_eq!(c.next_after(at("2026-12-04T17:50:00Z")), Some(at("2026-12-07T09:00:00Z")));
        assert_eq!(c.next_after(at("2026-12-07T09:00:00Z")), Some(at("2026-12-07T09:15:00Z")));
        let monthly = Cron::parse("0 0 1 * *").unwrap();
        assert_eq!(
            monthly.next_after(at("2026-12-06T03:00:00Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
        // Day of month or Sunday (7 and 0 are both Sunday).
        let either = Cron::parse("30 6 13 * 7").unwrap();
        assert_eq!(either.next_after(at("2026-12-06T07:00:00Z")), Some(at("2026-12-13T06:30:00Z")));
        for bad in
            ["* * * *", "60 * * * *", "* 24 * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"]
        {
            assert!(Cron::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Every::Interval(2).next_after(10).unwrap(), 2_000_010);
    }
}
