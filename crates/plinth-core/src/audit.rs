//! The append-only audit log. Entries are written in the same transaction as the change they
//! describe, so a committed change always has its entry and a rolled-back one never does.

use plinth_api::Page;
use plinth_api::audit::{AuditEntry, AuditQuery};
use serde_json::Value;

use crate::Plinth;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Sql, Tx, col};
use crate::util::{
    decode_cursor, encode_cursor, micros_to_time, new_id, now_micros, page_limit, time_to_micros,
};

/// The object a mutation touched.
pub struct Target<'a> {
    pub team_id: Option<&'a str>,
    pub object_type: &'a str,
    pub object_id: &'a str,
    pub object_name: &'a str,
}

/// Appends an entry in `tx`.
pub async fn record(
    tx: &mut Tx,
    who: &Principal,
    action: &str,
    target: Target<'_>,
    summary: Value,
) -> Result<()> {
    Sql::with(
        "INSERT INTO audit_log (id, at, actor_id, actor_name, team_id, action, object_type, object_id, object_name, summary, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            new_id("aud").into(),
            now_micros().into(),
            who.id.clone().into(),
            who.name.clone().into(),
            target.team_id.into(),
            action.into(),
            target.object_type.into(),
            target.object_id.into(),
            target.object_name.into(),
            summary.to_string().into(),
            who.request_id.clone().into(),
        ],
    )
    .execute(tx)
    .await?;
    Ok(())
}

impl Plinth {
    /// Reads the audit log, newest first. Team maintainers read their team's entries; admins
    /// read everything, including platform-wide entries.
    pub async fn audit_log(&self, who: &Principal, q: &AuditQuery) -> Result<Page<AuditEntry>> {
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new(
            "SELECT a.*, t.name AS team_name FROM audit_log a LEFT JOIN teams t ON t.id = a.team_id WHERE 1 = 1",
        );
        match &q.team {
            Some(name) => {
                let team = self.team_ref(who, name).await?;
                who.require(
                    &team,
                    plinth_api::identity::TeamRole::Maintainer,
                    "reading the audit log",
                )?;
                sql.push(" AND a.team_id = ").bind(team.id);
            }
            None => {
                who.require_admin("reading the whole audit log (pass team=<name> for one team's)")?
            }
        }
        if let Some(prefix) = &q.action {
            sql.push(" AND a.action LIKE ")
                .bind(format!("{}%", like_escape(prefix)))
                .push(" ESCAPE '\\'");
        }
        if let Some(actor) = &q.actor {
            sql.push(" AND a.actor_name = ").bind(actor.clone());
        }
        if let Some(object) = &q.object_id {
            sql.push(" AND a.object_id = ").bind(object.clone());
        }
        if let Some(since) = q.since {
            sql.push(" AND a.at >= ").bind(time_to_micros(since));
        }
        if let Some(until) = q.until {
            sql.push(" AND a.at < ").bind(time_to_micros(until));
        }
        if let Some(cursor) = &q.cursor {
            let parts = decode_cursor(cursor, 2)?;
            let at: i64 = parts[0]
                .parse()
                .map_err(|_| Error::invalid("cursor", "not a cursor returned by this endpoint"))?;
            sql.push(" AND (a.at < ")
                .bind(at)
                .push(" OR (a.at = ")
                .bind(at)
                .push(" AND a.id < ")
                .bind(parts[1].clone())
                .push("))");
        }
        sql.push(" ORDER BY a.at DESC, a.id DESC LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let mut items = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            let at: i64 = col(row, "at")?;
            let id: String = col(row, "id")?;
            let summary: String = col(row, "summary")?;
            last = Some((at, id.clone()));
            items.push(AuditEntry {
                id,
                at: micros_to_time(at),
                actor: col(row, "actor_name")?,
                actor_id: col(row, "actor_id")?,
                team: col(row, "team_name")?,
                action: col(row, "action")?,
                object_type: col(row, "object_type")?,
                object_id: col(row, "object_id")?,
                object_name: col(row, "object_name")?,
                summary: serde_json::from_str(&summary).unwrap_or(Value::String(summary)),
                request_id: col(row, "request_id")?,
            });
        }
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| last.map(|(at, id)| encode_cursor(&[&at.to_string(), &id])))
            .flatten();
        Ok(Page { items, next_cursor })
    }
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
