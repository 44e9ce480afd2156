//! Teams, users, service accounts, memberships and API keys, and the first-start bootstrap of
//! the platform admin.

use plinth_api::Code;
use plinth_api::Page;
use plinth_api::identity::{
    ApiKeyInfo, CreateApiKey, CreateServiceAccount, CreateTeam, CreateUser, CreatedApiKey,
    ListKeysQuery, Membership, PageQuery, PlatformRole, PrincipalInfo, PrincipalKind, Team,
    TeamRole, WhoAmI,
};
use serde_json::json;
use sqlx::any::AnyRow;

use crate::Plinth;
use crate::audit::{self, Target};
use crate::auth::{self, Principal, TeamRef};
use crate::error::{Error, Result};
use crate::store::{Sql, col};
use crate::util::{
    check_name, check_text, decode_cursor, encode_cursor, micros_to_time, new_id, now_micros,
    page_limit, time_to_micros,
};

/// The name of the admin user created at first start.
pub const BOOTSTRAP_ADMIN: &str = "admin";

fn team_from_row(row: &AnyRow, who: Option<&Principal>) -> Result<Team> {
    let id: String = col(row, "id")?;
    Ok(Team {
        your_role: who.and_then(|w| w.teams.get(&id).map(|(_, r)| *r)),
        id,
        name: col(row, "name")?,
        display_name: col(row, "display_name")?,
        description: col(row, "description")?,
        created_at: micros_to_time(col(row, "created_at")?),
    })
}

fn principal_from_row(row: &AnyRow) -> Result<PrincipalInfo> {
    let kind: String = col(row, "kind")?;
    let role: Option<String> = col(row, "platform_role")?;
    Ok(PrincipalInfo {
        id: col(row, "id")?,
        kind: PrincipalKind::parse(&kind)
            .ok_or_else(|| Error::internal(format!("bad kind {kind}")))?,
        name: col(row, "name")?,
        display_name: col(row, "display_name")?,
        email: col(row, "email")?,
        platform_role: role.as_deref().and_then(PlatformRole::parse),
        team: col(row, "team_name")?,
        created_at: micros_to_time(col(row, "created_at")?),
    })
}

fn key_from_row(row: &AnyRow) -> Result<ApiKeyInfo> {
    let opt = |name: &str| -> Result<_> { Ok(col::<Option<i64>>(row, name)?.map(micros_to_time)) };
    Ok(ApiKeyInfo {
        id: col(row, "id")?,
        name: col(row, "name")?,
        principal: col(row, "principal_name")?,
        created_at: micros_to_time(col(row, "created_at")?),
        expires_at: opt("expires_at")?,
        revoked_at: opt("revoked_at")?,
        last_used_at: opt("last_used_at")?,
    })
}

const PRINCIPAL_SELECT: &str =
    "SELECT p.*, t.name AS team_name FROM principals p LEFT JOIN teams t ON t.id = p.owner_team_id";

impl Plinth {
    /// Looks up a team the caller can see. Unknown and invisible teams are both `not_found`.
    pub async fn team_ref(&self, who: &Principal, name: &str) -> Result<TeamRef> {
        let row = self
            .db
            .fetch_optional(&Sql::with("SELECT id, name FROM teams WHERE name = $1", [name.into()]))
            .await?;
        let Some(row) = row else { return Err(Error::not_found("team", name)) };
        let team = TeamRef { id: col(&row, "id")?, name: col(&row, "name")? };
        if who.role_in(&team.id).is_none() {
            return Err(Error::not_found("team", name));
        }
        Ok(team)
    }

    /// Creates the platform admin on first start. Returns the new admin key to show once, or
    /// `None` when the platform was already bootstrapped or the key was supplied.
    pub async fn bootstrap(&self, supplied_key: Option<&str>) -> Result<Option<String>> {
        let existing =
            self.db.fetch_optional(&Sql::new("SELECT id FROM principals LIMIT 1")).await?;
        if existing.is_some() {
            return Ok(None);
        }
        let (key_id, secret, hash, shown) = match supplied_key {
            Some(key) => {
                let (id, hash) = auth::parse_key(key).ok_or_else(|| {
                    Error::invalid("bootstrap_admin_key", "not a Plinth API key (plk_<16 hex>_<48 hex>; generate one with `plinth key generate`)")
                })?;
                (id, None, hash, false)
            }
            None => {
                let (id, full, hash) = auth::generate_key();
                (id, Some(full), hash, true)
            }
        };
        let now = now_micros();
        let admin_id = new_id("usr");
        let admin = Principal {
            id: admin_id.clone(),
            name: BOOTSTRAP_ADMIN.into(),
            kind: PrincipalKind::User,
            platform_role: Some(PlatformRole::Admin),
            teams: Default::default(),
            key_id: key_id.clone(),
            request_id: None,
        };
        let mut tx = self.db.begin().await?;
        let inserted = Sql::with(
            "INSERT INTO principals (id, kind, name, display_name, email, platform_role, owner_team_id, created_at, created_by)
             VALUES ($1, 'user', $2, 'Platform admin', NULL, 'admin', NULL, $3, NULL)",
            [admin_id.clone().into(), BOOTSTRAP_ADMIN.into(), now.into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("user", BOOTSTRAP_ADMIN))
        .await;
        if let Err(e) = inserted {
            // Another replica bootstrapped at the same moment.
            if e.code == Code::AlreadyExists {
                return Ok(None);
            }
            return Err(e);
        }
        Sql::with(
            "INSERT INTO api_keys (id, principal_id, name, secret_hash, created_at, created_by) VALUES ($1, $2, 'bootstrap', $3, $4, $2)",
            [key_id.clone().into(), admin_id.clone().into(), hash.into(), now.into()],
        )
        .execute(&mut tx)
        .await?;
        let target = Target {
            team_id: None,
            object_type: "principal",
            object_id: &admin_id,
            object_name: BOOTSTRAP_ADMIN,
        };
        audit::record(
            &mut tx,
            &admin,
            "platform.bootstrap",
            target,
            json!({"admin_key_id": key_id, "key_supplied": !shown}),
        )
        .await?;
        tx.commit().await?;
        Ok(secret)
    }

    pub async fn whoami(&self, who: &Principal) -> Result<WhoAmI> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                &format!("{PRINCIPAL_SELECT} WHERE p.id = $1"),
                [who.id.clone().into()],
            ))
            .await?
            .ok_or_else(|| Error::internal("authenticated principal vanished"))?;
        let principal = principal_from_row(&row)?;
        let rows = self
            .db
            .fetch_all(&Sql::with(
                "SELECT t.name AS team, m.role, m.created_at FROM memberships m JOIN teams t ON t.id = m.team_id
                 WHERE m.principal_id = $1 ORDER BY t.name",
                [who.id.clone().into()],
            ))
            .await?;
        let memberships = rows
            .iter()
            .map(|r| {
                Ok(Membership {
                    team: col(r, "team")?,
                    principal: who.name.clone(),
                    principal_kind: who.kind,
                    role: parse_role(&col::<String>(r, "role")?)?,
                    since: micros_to_time(col(r, "created_at")?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(WhoAmI { principal, memberships, key_id: who.key_id.clone() })
    }

    pub async fn create_team(&self, who: &Principal, req: CreateTeam) -> Result<Team> {
        who.require_admin("creating a team")?;
        check_name("name", &req.name)?;
        let display_name = req.display_name.unwrap_or_else(|| req.name.clone());
        check_text("display_name", &display_name, 200)?;
        let description = req.description.unwrap_or_default();
        check_text("description", &description, 10_000)?;
        let id = new_id("team");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO teams (id, name, display_name, description, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)",
            [id.clone().into(), req.name.clone().into(), display_name.clone().into(), description.clone().into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("team", &req.name).with_field("name"))
        .await?;
        let target = Target {
            team_id: Some(&id),
            object_type: "team",
            object_id: &id,
            object_name: &req.name,
        };
        audit::record(
            &mut tx,
            who,
            "team.create",
            target,
            json!({"display_name": display_name, "description": description}),
        )
        .await?;
        tx.commit().await?;
        Ok(Team {
            id,
            name: req.name,
            display_name,
            description,
            created_at: micros_to_time(now),
            your_role: None,
        })
    }

    pub async fn list_teams(&self, who: &Principal, q: &PageQuery) -> Result<Page<Team>> {
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new("SELECT * FROM teams WHERE 1 = 1");
        if let Some(ids) = who.visible_teams() {
            if ids.is_empty() {
                return Ok(Page { items: vec![], next_cursor: None });
            }
            sql.push(" AND id IN (");
            for (i, id) in ids.into_iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(id);
            }
            sql.push(")");
        }
        if let Some(cursor) = &q.cursor {
            let parts = decode_cursor(cursor, 1)?;
            sql.push(" AND name > ").bind(parts[0].clone());
        }
        sql.push(" ORDER BY name LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let items: Vec<Team> = rows
            .iter()
            .take(limit as usize)
            .map(|r| team_from_row(r, Some(who)))
            .collect::<Result<_>>()?;
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| encode_cursor(&[&items.last().expect("non-empty").name]));
        Ok(Page { items, next_cursor })
    }

    pub async fn get_team(&self, who: &Principal, name: &str) -> Result<Team> {
        let team = self.team_ref(who, name).await?;
        let row = self
            .db
            .fetch_optional(&Sql::with("SELECT * FROM teams WHERE id = $1", [team.id.into()]))
            .await?
            .ok_or_else(|| Error::not_found("team", name))?;
        team_from_row(&row, Some(who))
    }

    pub async fn list_members(
        &self,
        who: &Principal,
        team: &str,
        q: &PageQuery,
    ) -> Result<Page<Membership>> {
        let team = self.team_ref(who, team).await?;
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new(
            "SELECT p.name, p.kind, m.role, m.created_at FROM memberships m JOIN principals p ON p.id = m.principal_id WHERE m.team_id = ",
        );
        sql.bind(team.id.clone());
        if let Some(cursor) = &q.cursor {
            sql.push(" AND p.name > ").bind(decode_cursor(cursor, 1)?.remove(0));
        }
        sql.push(" ORDER BY p.name LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let items: Vec<Membership> = rows
            .iter()
            .take(limit as usize)
            .map(|r| {
                let kind: String = col(r, "kind")?;
                Ok(Membership {
                    team: team.name.clone(),
                    principal: col(r, "name")?,
                    principal_kind: PrincipalKind::parse(&kind).unwrap_or(PrincipalKind::User),
                    role: parse_role(&col::<String>(r, "role")?)?,
                    since: micros_to_time(col(r, "created_at")?),
                })
            })
            .collect::<Result<_>>()?;
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| encode_cursor(&[&items.last().expect("non-empty").principal]));
        Ok(Page { items, next_cursor })
    }

    /// Adds a principal to a team, or changes its role there.
    pub async fn set_member(
        &self,
        who: &Principal,
        team: &str,
        principal: &str,
        role: TeamRole,
    ) -> Result<Membership> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Maintainer, "managing members")?;
        let target = self
            .principal_row(principal)
            .await?
            .ok_or_else(|| Error::not_found("principal", principal))?;
        let target = principal_from_row(&target)?;
        if target.kind == PrincipalKind::ServiceAccount
            && target.team.as_deref() != Some(team.name.as_str())
        {
            return Err(Error::invalid(
                "principal",
                "a service account can only be a member of the team that owns it",
            ));
        }
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let previous = Sql::with(
            "SELECT role FROM memberships WHERE team_id = $1 AND principal_id = $2",
            [team.id.clone().into(), target.id.clone().into()],
        )
        .fetch_optional_tx(&mut tx)
        .await?
        .map(|r| col::<String>(&r, "role"))
        .transpose()?;
        if previous.is_some() {
            Sql::with(
                "UPDATE memberships SET role = $1 WHERE team_id = $2 AND principal_id = $3",
                [role.as_str().into(), team.id.clone().into(), target.id.clone().into()],
            )
            .execute(&mut tx)
            .await?;
        } else {
            Sql::with(
                "INSERT INTO memberships (team_id, principal_id, role, created_at) VALUES ($1, $2, $3, $4)",
                [team.id.clone().into(), target.id.clone().into(), role.as_str().into(), now.into()],
            )
            .execute(&mut tx)
            .await?;
        }
        let t = Target {
            team_id: Some(&team.id),
            object_type: "membership",
            object_id: &target.id,
            object_name: &target.name,
        };
        audit::record(
            &mut tx,
            who,
            "team.member.set",
            t,
            json!({"role": role.as_str(), "previous_role": previous}),
        )
        .await?;
        crate::store::bump(&mut tx, crate::store::IDENTITY).await?;
        tx.commit().await?;
        self.auth_cache.clear();
        Ok(Membership {
            team: team.name,
            principal: target.name,
            principal_kind: target.kind,
            role,
            since: micros_to_time(now),
        })
    }

    pub async fn remove_member(&self, who: &Principal, team: &str, principal: &str) -> Result<()> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Maintainer, "managing members")?;
        let target = self
            .principal_row(principal)
            .await?
            .ok_or_else(|| Error::not_found("principal", principal))?;
        let target_id: String = col(&target, "id")?;
        let mut tx = self.db.begin().await?;
        let n = Sql::with(
            "DELETE FROM memberships WHERE team_id = $1 AND principal_id = $2",
            [team.id.clone().into(), target_id.clone().into()],
        )
        .execute(&mut tx)
        .await?;
        if n == 0 {
            return Err(Error::not_found("member", principal));
        }
        let t = Target {
            team_id: Some(&team.id),
            object_type: "membership",
            object_id: &target_id,
            object_name: principal,
        };
        audit::record(&mut tx, who, "team.member.remove", t, json!({})).await?;
        crate::store::bump(&mut tx, crate::store::IDENTITY).await?;
        tx.commit().await?;
        self.auth_cache.clear();
        Ok(())
    }

    async fn principal_row(&self, name: &str) -> Result<Option<AnyRow>> {
        self.db
            .fetch_optional(&Sql::with(
                &format!("{PRINCIPAL_SELECT} WHERE p.name = $1"),
                [name.into()],
            ))
            .await
    }

    pub async fn create_user(&self, who: &Principal, req: CreateUser) -> Result<PrincipalInfo> {
        who.require_admin("creating a user")?;
        check_name("name", &req.name)?;
        let display_name = req.display_name.unwrap_or_else(|| req.name.clone());
        check_text("display_name", &display_name, 200)?;
        if let Some(email) = &req.email {
            check_text("email", email, 320)?;
            if !email.contains('@') || email.contains(char::is_whitespace) {
                return Err(Error::invalid("email", "not an email address"));
            }
        }
        let id = new_id("usr");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO principals (id, kind, name, display_name, email, platform_role, owner_team_id, created_at, created_by)
             VALUES ($1, 'user', $2, $3, $4, $5, NULL, $6, $7)",
            [
                id.clone().into(),
                req.name.clone().into(),
                display_name.clone().into(),
                req.email.clone().into(),
                req.platform_role.map(|r| r.as_str().to_string()).into(),
                now.into(),
                who.id.clone().into(),
            ],
        )
        .execute_unique(&mut tx, || Error::already_exists("user", &req.name).with_field("name"))
        .await?;
        let t = Target {
            team_id: None,
            object_type: "principal",
            object_id: &id,
            object_name: &req.name,
        };
        audit::record(
            &mut tx,
            who,
            "user.create",
            t,
            json!({"platform_role": req.platform_role, "email": req.email}),
        )
        .await?;
        tx.commit().await?;
        Ok(PrincipalInfo {
            id,
            kind: PrincipalKind::User,
            name: req.name,
            display_name,
            email: req.email,
            platform_role: req.platform_role,
            team: None,
            created_at: micros_to_time(now),
        })
    }

    pub async fn list_users(&self, who: &Principal, q: &PageQuery) -> Result<Page<PrincipalInfo>> {
        who.require_admin("listing users")?;
        let limit = page_limit(q.limit)?;
        let mut sql = Sql::new(&format!("{PRINCIPAL_SELECT} WHERE p.kind = 'user'"));
        if let Some(cursor) = &q.cursor {
            sql.push(" AND p.name > ").bind(decode_cursor(cursor, 1)?.remove(0));
        }
        sql.push(" ORDER BY p.name LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let items: Vec<PrincipalInfo> =
            rows.iter().take(limit as usize).map(principal_from_row).collect::<Result<_>>()?;
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| encode_cursor(&[&items.last().expect("non-empty").name]));
        Ok(Page { items, next_cursor })
    }

    /// Creates a service account owned by a team; its principal name is `team/name`.
    pub async fn create_service_account(
        &self,
        who: &Principal,
        team: &str,
        req: CreateServiceAccount,
    ) -> Result<PrincipalInfo> {
        let team = self.team_ref(who, team).await?;
        who.require(&team, TeamRole::Maintainer, "creating a service account")?;
        check_name("name", &req.name)?;
        let full_name = format!("{}/{}", team.name, req.name);
        let display_name = req.display_name.unwrap_or_else(|| full_name.clone());
        check_text("display_name", &display_name, 200)?;
        let role = req.role.unwrap_or(TeamRole::Viewer);
        let id = new_id("sa");
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO principals (id, kind, name, display_name, email, platform_role, owner_team_id, created_at, created_by)
             VALUES ($1, 'service_account', $2, $3, NULL, NULL, $4, $5, $6)",
            [id.clone().into(), full_name.clone().into(), display_name.clone().into(), team.id.clone().into(), now.into(), who.id.clone().into()],
        )
        .execute_unique(&mut tx, || Error::already_exists("service account", &full_name).with_field("name"))
        .await?;
        Sql::with(
            "INSERT INTO memberships (team_id, principal_id, role, created_at) VALUES ($1, $2, $3, $4)",
            [team.id.clone().into(), id.clone().into(), role.as_str().into(), now.into()],
        )
        .execute(&mut tx)
        .await?;
        let t = Target {
            team_id: Some(&team.id),
            object_type: "principal",
            object_id: &id,
            object_name: &full_name,
        };
        audit::record(&mut tx, who, "service_account.create", t, json!({"role": role.as_str()}))
            .await?;
        tx.commit().await?;
        Ok(PrincipalInfo {
            id,
            kind: PrincipalKind::ServiceAccount,
            name: full_name,
            display_name,
            email: None,
            platform_role: None,
            team: Some(team.name),
            created_at: micros_to_time(now),
        })
    }

    /// Decides whether `who` may manage the keys of the principal in `row`.
    fn may_manage_keys_of(&self, who: &Principal, row: &AnyRow) -> Result<bool> {
        let id: String = col(row, "id")?;
        if id == who.id || who.is_admin() {
            return Ok(true);
        }
        let owner: Option<String> = col(row, "owner_team_id")?;
        Ok(owner.is_some_and(|team| {
            who.teams.get(&team).is_some_and(|(_, r)| *r == TeamRole::Maintainer)
        }))
    }

    pub async fn create_key(&self, who: &Principal, req: CreateApiKey) -> Result<CreatedApiKey> {
        let name = req.name.unwrap_or_else(|| "default".into());
        check_text("name", &name, 100)?;
        if name.is_empty() {
            return Err(Error::invalid("name", "must not be empty"));
        }
        let target_name = req.principal.clone().unwrap_or_else(|| who.name.clone());
        let row = self
            .principal_row(&target_name)
            .await?
            .ok_or_else(|| Error::not_found("principal", &target_name))?;
        if !self.may_manage_keys_of(who, &row)? {
            return Err(Error::not_found("principal", &target_name));
        }
        let now = now_micros();
        let expires_at = req.expires_at.map(time_to_micros);
        if expires_at.is_some_and(|t| t <= now) {
            return Err(Error::invalid("expires_at", "is in the past"));
        }
        let target_id: String = col(&row, "id")?;
        let team_id: Option<String> = col(&row, "owner_team_id")?;
        let (key_id, secret, hash) = auth::generate_key();
        let mut tx = self.db.begin().await?;
        Sql::with(
            "INSERT INTO api_keys (id, principal_id, name, secret_hash, created_at, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [key_id.clone().into(), target_id.into(), name.clone().into(), hash.into(), now.into(), who.id.clone().into(), expires_at.into()],
        )
        .execute(&mut tx)
        .await?;
        let t = Target {
            team_id: team_id.as_deref(),
            object_type: "api_key",
            object_id: &key_id,
            object_name: &name,
        };
        audit::record(&mut tx, who, "key.create", t, json!({"principal": target_name, "expires_at": req.expires_at.map(|t| t.unix_timestamp())}))
            .await?;
        tx.commit().await?;
        Ok(CreatedApiKey {
            key: ApiKeyInfo {
                id: key_id,
                name,
                principal: target_name,
                created_at: micros_to_time(now),
                expires_at: expires_at.map(micros_to_time),
                revoked_at: None,
                last_used_at: None,
            },
            secret,
        })
    }

    pub async fn list_keys(&self, who: &Principal, q: &ListKeysQuery) -> Result<Page<ApiKeyInfo>> {
        let limit = page_limit(q.limit)?;
        let target_name = q.principal.clone().unwrap_or_else(|| who.name.clone());
        let row = self
            .principal_row(&target_name)
            .await?
            .ok_or_else(|| Error::not_found("principal", &target_name))?;
        if !self.may_manage_keys_of(who, &row)? {
            return Err(Error::not_found("principal", &target_name));
        }
        let mut sql = Sql::new(
            "SELECT k.*, p.name AS principal_name FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.principal_id = ",
        );
        sql.bind(col::<String>(&row, "id")?);
        if let Some(cursor) = &q.cursor {
            sql.push(" AND k.id > ").bind(decode_cursor(cursor, 1)?.remove(0));
        }
        sql.push(" ORDER BY k.id LIMIT ").bind(limit + 1);
        let rows = self.db.fetch_all(&sql).await?;
        let items: Vec<ApiKeyInfo> =
            rows.iter().take(limit as usize).map(key_from_row).collect::<Result<_>>()?;
        let next_cursor = (rows.len() as i64 > limit)
            .then(|| encode_cursor(&[&items.last().expect("non-empty").id]));
        Ok(Page { items, next_cursor })
    }

    pub async fn revoke_key(&self, who: &Principal, key_id: &str) -> Result<ApiKeyInfo> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT k.*, p.name AS principal_name, p.owner_team_id FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.id = $1",
                [key_id.into()],
            ))
            .await?
            .ok_or_else(|| Error::not_found("key", key_id))?;
        let owner_row = self
            .principal_row(&col::<String>(&row, "principal_name")?)
            .await?
            .ok_or_else(|| Error::not_found("key", key_id))?;
        if !self.may_manage_keys_of(who, &owner_row)? {
            return Err(Error::not_found("key", key_id));
        }
        if col::<Option<i64>>(&row, "revoked_at")?.is_some() {
            return key_from_row(&row);
        }
        let now = now_micros();
        let team_id: Option<String> = col(&row, "owner_team_id")?;
        let name: String = col(&row, "name")?;
        let mut tx = self.db.begin().await?;
        Sql::with("UPDATE api_keys SET revoked_at = $1 WHERE id = $2", [now.into(), key_id.into()])
            .execute(&mut tx)
            .await?;
        let t = Target {
            team_id: team_id.as_deref(),
            object_type: "api_key",
            object_id: key_id,
            object_name: &name,
        };
        audit::record(
            &mut tx,
            who,
            "key.revoke",
            t,
            json!({"principal": col::<String>(&row, "principal_name")?}),
        )
        .await?;
        crate::store::bump(&mut tx, crate::store::IDENTITY).await?;
        tx.commit().await?;
        self.auth_cache.clear();
        let mut info = key_from_row(&row)?;
        info.revoked_at = Some(micros_to_time(now));
        Ok(info)
    }
}

fn parse_role(s: &str) -> Result<TeamRole> {
    TeamRole::parse(s).ok_or_else(|| Error::internal(format!("unknown role {s} in database")))
}
