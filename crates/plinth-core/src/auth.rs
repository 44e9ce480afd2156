//! Authentication (API keys) and authorization (who may do what to which team's objects).
//!
//! **Invariant:** every core operation on team data takes the caller's [`Principal`] and checks
//! it here. A caller without any access to a team gets `not_found` for the team and everything
//! in it, never `forbidden`, so names do not leak across teams.

use std::collections::HashMap;

use plinth_api::Code;
use plinth_api::identity::{PlatformRole, PrincipalKind, TeamRole};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{Db, Sql, col};
use crate::util::now_micros;

/// The authenticated caller of one request (or of a background task acting for someone).
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub kind: PrincipalKind,
    pub platform_role: Option<PlatformRole>,
    /// team id → (team name, role)
    pub teams: HashMap<String, (String, TeamRole)>,
    pub key_id: String,
    /// The request this call serves, recorded in the audit log.
    pub request_id: Option<String>,
}

/// A team as authorization sees it.
#[derive(Debug, Clone)]
pub struct TeamRef {
    pub id: String,
    pub name: String,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.platform_role == Some(PlatformRole::Admin)
    }

    pub fn is_reviewer(&self) -> bool {
        self.platform_role == Some(PlatformRole::Reviewer)
    }

    /// The caller's effective role in a team: admins act as maintainers everywhere, reviewers
    /// as viewers everywhere.
    pub fn role_in(&self, team_id: &str) -> Option<TeamRole> {
        let member = self.teams.get(team_id).map(|(_, r)| *r);
        let platform = match self.platform_role {
            Some(PlatformRole::Admin) => Some(TeamRole::Maintainer),
            Some(PlatformRole::Reviewer) => Some(TeamRole::Viewer),
            None => None,
        };
        member.max(platform)
    }

    /// Allows the operation if the caller has at least `needed` in the team. No access at all is
    /// `not_found` (the team is invisible); too low a role is `forbidden`.
    pub fn require(&self, team: &TeamRef, needed: TeamRole, action: &str) -> Result<()> {
        match self.role_in(&team.id) {
            None => Err(Error::not_found("team", &team.name)),
            Some(role) if role >= needed => Ok(()),
            Some(role) => Err(Error::forbidden(format!(
                "{action} needs the {} role in team '{}'; you are {}",
                needed.as_str(),
                team.name,
                role.as_str()
            ))),
        }
    }

    pub fn require_admin(&self, action: &str) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::forbidden(format!("{action} needs the platform admin role")))
        }
    }

    /// Team ids whose objects the caller may see, or `None` for "all teams".
    pub fn visible_teams(&self) -> Option<Vec<String>> {
        if self.platform_role.is_some() { None } else { Some(self.teams.keys().cloned().collect()) }
    }
}

/// The prefix of every Plinth API key.
pub const KEY_PREFIX: &str = "plk_";

/// A new key: `(key id, full secret to show once, hash to store)`.
pub fn generate_key() -> (String, String, String) {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    let full = format!("{KEY_PREFIX}{id}_{secret}");
    (format!("key_{id}"), full, hash_secret(&secret))
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Splits a presented key into `(key id, hash of its secret)`.
pub fn parse_key(presented: &str) -> Option<(String, String)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let hexy = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    if !hexy(id, 16) || !hexy(secret, 48) {
        return None;
    }
    Some((format!("key_{id}"), hash_secret(secret)))
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Recently authenticated keys, so a prediction does not touch the database. Entries live a few
/// seconds; identity changes made through this process clear the cache at once.
#[derive(Default)]
pub struct AuthCache {
    entries: std::sync::RwLock<HashMap<(String, String), CachedKey>>,
}

/// A cached authentication: the principal, the key's expiry, and when it was cached.
type CachedKey = (Principal, Option<i64>, std::time::Instant);

const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl AuthCache {
    pub async fn authenticate(&self, db: &Db, presented: &str) -> Result<Principal> {
        let parsed = parse_key(presented.trim());
        if let Some(key) = &parsed
            && let Some((p, expires, at)) = self.entries.read().expect("auth cache").get(key)
            && at.elapsed() < CACHE_TTL
        {
            if expires.is_some_and(|t| t <= now_micros()) {
                return Err(Error::new(
                    Code::KeyExpired,
                    format!("the API key {} has expired", p.key_id),
                ));
            }
            return Ok(p.clone());
        }
        let (principal, expires) = authenticate(db, presented).await?;
        if let Some(key) = parsed {
            let mut entries = self.entries.write().expect("auth cache");
            if entries.len() > 10_000 {
                entries.clear();
            }
            entries.insert(key, (principal.clone(), expires, std::time::Instant::now()));
        }
        Ok(principal)
    }

    /// Forgets every cached key (after a change to keys, memberships or roles).
    pub fn clear(&self) {
        self.entries.write().expect("auth cache").clear();
    }
}

/// Resolves a presented API key to its principal and the key's expiry.
pub async fn authenticate(db: &Db, presented: &str) -> Result<(Principal, Option<i64>)> {
    let invalid = || Error::new(Code::Unauthenticated, "the API key is not valid");
    let (key_id, hash) = parse_key(presented.trim()).ok_or_else(invalid)?;
    let row = db
        .fetch_optional(&Sql::with(
            "SELECT k.secret_hash, k.expires_at, k.revoked_at, k.last_used_at, p.id, p.name, p.kind, p.platform_role
             FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.id = $1",
            [key_id.clone().into()],
        ))
        .await?
        .ok_or_else(invalid)?;
    let stored: String = col(&row, "secret_hash")?;
    if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
        return Err(invalid());
    }
    let now = now_micros();
    if col::<Option<i64>>(&row, "revoked_at")?.is_some() {
        return Err(Error::new(Code::KeyRevoked, format!("the API key {key_id} has been revoked")));
    }
    let expires_at: Option<i64> = col(&row, "expires_at")?;
    if expires_at.is_some_and(|t| t <= now) {
        return Err(Error::new(Code::KeyExpired, format!("the API key {key_id} has expired")));
    }
    let principal_id: String = col(&row, "id")?;
    let last_used: Option<i64> = col(&row, "last_used_at")?;
    if last_used.is_none_or(|t| now - t > 60_000_000) {
        let mut tx = db.begin().await?;
        Sql::with(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2",
            [now.into(), key_id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
    }
    let teams = memberships(db, &principal_id).await?;
    let kind: String = col(&row, "kind")?;
    let platform_role: Option<String> = col(&row, "platform_role")?;
    let principal = Principal {
        id: principal_id,
        name: col(&row, "name")?,
        kind: PrincipalKind::parse(&kind)
            .ok_or_else(|| Error::internal(format!("bad kind {kind}")))?,
        platform_role: platform_role.as_deref().and_then(PlatformRole::parse),
        teams,
        key_id,
        request_id: None,
    };
    Ok((principal, expires_at))
}

async fn memberships(db: &Db, principal_id: &str) -> Result<HashMap<String, (String, TeamRole)>> {
    let rows = db
        .fetch_all(&Sql::with(
            "SELECT t.id, t.name, m.role FROM memberships m JOIN teams t ON t.id = m.team_id WHERE m.principal_id = $1",
            [principal_id.into()],
        ))
        .await?;
    let mut teams = HashMap::new();
    for m in rows {
        let role: String = col(&m, "role")?;
        let role =
            TeamRole::parse(&role).ok_or_else(|| Error::internal(format!("bad role {role}")))?;
        teams.insert(col(&m, "id")?, (col(&m, "name")?, role));
    }
    Ok(teams)
}

/// A principal as it stands now, by id: what background work acting for someone (a training
/// run) checks its permissions against.
pub(crate) async fn principal_by_id(db: &Db, id: &str) -> Result<Principal> {
    let row = db
        .fetch_optional(&Sql::with(
            "SELECT id, name, kind, platform_role FROM principals WHERE id = $1",
            [id.into()],
        ))
        .await?
        .ok_or_else(|| Error::not_found("principal", id))?;
    let kind: String = col(&row, "kind")?;
    let platform_role: Option<String> = col(&row, "platform_role")?;
    Ok(Principal {
        id: id.to_string(),
        name: col(&row, "name")?,
        kind: PrincipalKind::parse(&kind)
            .ok_or_else(|| Error::internal(format!("bad kind {kind}")))?,
        platform_role: platform_role.as_deref().and_then(PlatformRole::parse),
        teams: memberships(db, id).await?,
        key_id: String::new(),
        request_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_to_their_id_and_hash() {
        let (id, full, hash) = generate_key();
        assert_eq!(parse_key(&full), Some((id, hash)));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "plk_",
            "plk_zz_yy",
            "xyz_0123456789abcdef_00",
            &format!("plk_{}_{}", "a".repeat(16), "b".repeat(47)),
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
