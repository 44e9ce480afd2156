//! Teams, users, service accounts' keys and the audit log.

use anyhow::Result;
use clap::{Args, Subcommand};
use plinth_api::Page;
use plinth_api::audit::AuditEntry;
use plinth_api::identity::{ApiKeyInfo, CreatedApiKey, Membership, PrincipalInfo, Team};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Global, PageArgs, connect, parse_duration, parse_time};
use crate::output;

/// Teams, users, service accounts, keys and the audit log.
#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Teams and their members.
    #[command(subcommand)]
    Team(TeamCmd),
    /// Users (platform admins).
    #[command(subcommand)]
    User(UserCmd),
    /// Service accounts owned by a team.
    #[command(subcommand, name = "service-account")]
    ServiceAccount(ServiceAccountCmd),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Read the audit log.
    Audit(AuditArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum TeamCmd {
    Create {
        /// The team's name: 1-63 characters of a-z, 0-9, '-' and '_'.
        name: String,
        /// A name for people to read (default: the team's name).
        #[arg(long)]
        display_name: Option<String>,
        /// What the team does, in a sentence.
        #[arg(long)]
        description: Option<String>,
    },
    List(PageArgs),
    Show {
        /// The team's name.
        name: String,
    },
    Members {
        /// The team's name.
        team: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Add a member or change its role: viewer, developer or maintainer.
    AddMember {
        /// The team's name.
        team: String,
        /// The user to add, by name.
        principal: String,
        /// Their role in the team: viewer, developer or maintainer.
        #[arg(long)]
        role: String,
    },
    RemoveMember {
        /// The team's name.
        team: String,
        /// The member to remove, by name.
        principal: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum UserCmd {
    Create {
        /// The user's name: 1-63 characters of a-z, 0-9, '-' and '_'.
        name: String,
        /// A name for people to read (default: the user's name).
        #[arg(long)]
        display_name: Option<String>,
        /// The user's email address.
        #[arg(long)]
        email: Option<String>,
        /// reviewer or admin
        #[arg(long)]
        platform_role: Option<String>,
    },
    List(PageArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum ServiceAccountCmd {
    Create {
        /// The team that owns the account.
        team: String,
        /// The account's name in the team (it is then known as TEAM/NAME).
        name: String,
        /// The account's role in its team (default viewer).
        #[arg(long)]
        role: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyCmd {
    /// Create a key (shown once).
    Create {
        /// A label for the key, e.g. laptop or ci (default: default).
        #[arg(long)]
        name: Option<String>,
        /// Whose key: a user name or team/service-account (default: you).
        #[arg(long)]
        principal: Option<String>,
        /// Expiry as a duration from now: 30d, 12h, 90m.
        #[arg(long, conflicts_with = "expires_at")]
        expires_in: Option<String>,
        /// Expiry as an RFC 3339 time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    List {
        /// Whose keys: a user name or team/service-account (default: yours).
        #[arg(long)]
        principal: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Revoke {
        /// The key's id (see `plinth key list`).
        id: String,
    },
    /// Print a new random key without contacting a server (for PLINTH_BOOTSTRAP_ADMIN_KEY).
    Generate,
}

#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Only this team's entries (required unless you are a platform admin).
    #[arg(long)]
    team: Option<String>,
    /// Action prefix, e.g. model. or key.revoke
    #[arg(long)]
    action: Option<String>,
    /// Only entries by this principal (a user name or team/service-account).
    #[arg(long)]
    actor: Option<String>,
    /// RFC 3339 time or a duration ago (e.g. 24h).
    #[arg(long)]
    since: Option<String>,
    /// Only entries before this: an RFC 3339 time or a duration ago (e.g. 1h).
    #[arg(long)]
    until: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

pub(crate) async fn run(g: &Global, cmd: Command) -> Result<()> {
    match cmd {
        Command::Team(cmd) => team(g, cmd).await,
        Command::User(cmd) => user(g, cmd).await,
        Command::ServiceAccount(ServiceAccountCmd::Create { team, name, role }) => {
            let p: PrincipalInfo = connect(g)?
                .post(
                    &format!("/teams/{team}/service-accounts"),
                    &json!({"name": name, "role": role}),
                )
                .await?;
            if g.json {
                output::json(&p);
            } else {
                println!("created service account {} ({})", p.name, p.id);
            }
            Ok(())
        }
        Command::Key(cmd) => key(g, cmd).await,
        Command::Audit(args) => audit(g, args).await,
    }
}

pub(super) async fn team(g: &Global, cmd: TeamCmd) -> Result<()> {
    let c = connect(g)?;
    match cmd {
        TeamCmd::Create { name, display_name, description } => {
            let t: Team = c.post("/teams", &json!({"name": name, "display_name": display_name, "description": description})).await?;
            if g.json { output::json(&t) } else { println!("created team {} ({})", t.name, t.id) }
        }
        TeamCmd::List(page) => {
            let p: Page<Team> = c.get("/teams", &page.query()).await?;
            if g.json {
                output::json(&p);
            } else {
                output::table(
                    &["team", "display name", "your role", "created"],
                    p.items
                        .iter()
                        .map(|t| {
                            vec![
                                t.name.clone(),
                                t.display_name.clone(),
                                t.your_role
                                    .map(|r| r.as_str().to_string())
                                    .unwrap_or_else(|| "-".into()),
                                output::time(&t.created_at),
                            ]
                        })
                        .collect(),
                );
                output::more(&p.next_cursor);
            }
        }
        TeamCmd::Show { name } => {
            let t: Team = c.get(&format!("/teams/{name}"), &[]).await?;
            if g.json {
                output::json(&t)
            } else {
                output::fields(&[
                    ("name", t.name),
                    ("id", t.id),
                    ("display name", t.display_name),
                    ("description", t.description),
                    ("created", output::time(&t.created_at)),
                ]);
            }
        }
        TeamCmd::Members { team, page } => {
            let p: Page<Membership> =
                c.get(&format!("/teams/{team}/members"), &page.query()).await?;
            if g.json {
                output::json(&p);
            } else {
                output::table(
                    &["principal", "kind", "role", "since"],
                    p.items
                        .iter()
                        .map(|m| {
                            vec![
                                m.principal.clone(),
                                m.principal_kind.as_str().into(),
                                m.role.as_str().into(),
                                output::time(&m.since),
                            ]
                        })
                        .collect(),
                );
                output::more(&p.next_cursor);
            }
        }
        TeamCmd::AddMember { team, principal, role } => {
            let m: Membership = c
                .put(&format!("/teams/{team}/members/{principal}"), &json!({"role": role}))
                .await?;
            if g.json {
                output::json(&m)
            } else {
                println!("{} is {} in {}", m.principal, m.role.as_str(), m.team)
            }
        }
        TeamCmd::RemoveMember { team, principal } => {
            let _: Value = c.delete(&format!("/teams/{team}/members/{principal}")).await?;
            if g.json {
                output::json(&json!({"removed": principal}))
            } else {
                println!("removed {principal} from {team}")
            }
        }
    }
    Ok(())
}

pub(super) async fn user(g: &Global, cmd: UserCmd) -> Result<()> {
    let c = connect(g)?;
    match cmd {
        UserCmd::Create { name, display_name, email, platform_role } => {
            let u: PrincipalInfo = c.post("/users", &json!({"name": name, "display_name": display_name, "email": email, "platform_role": platform_role})).await?;
            if g.json { output::json(&u) } else { println!("created user {} ({})", u.name, u.id) }
        }
        UserCmd::List(page) => {
            let p: Page<PrincipalInfo> = c.get("/users", &page.query()).await?;
            if g.json {
                output::json(&p);
            } else {
                output::table(
                    &["user", "email", "platform role", "created"],
                    p.items
                        .iter()
                        .map(|u| {
                            vec![
                                u.name.clone(),
                                u.email.clone().unwrap_or_default(),
                                u.platform_role
                                    .map(|r| r.as_str().to_string())
                                    .unwrap_or_else(|| "-".into()),
                                output::time(&u.created_at),
                            ]
                        })
                        .collect(),
                );
                output::more(&p.next_cursor);
            }
        }
    }
    Ok(())
}

pub(super) async fn key(g: &Global, cmd: KeyCmd) -> Result<()> {
    if let KeyCmd::Generate = cmd {
        let (_, full, _) = plinth_core::auth::generate_key();
        println!("{full}");
        return Ok(());
    }
    let c = connect(g)?;
    match cmd {
        KeyCmd::Create { name, principal, expires_in, expires_at } => {
            let expires_at = match (expires_in, expires_at) {
                (Some(d), _) => {
                    Some((OffsetDateTime::now_utc() + parse_duration(&d)?).format(&Rfc3339)?)
                }
                (None, Some(t)) => Some(t),
                (None, None) => None,
            };
            let k: CreatedApiKey = c
                .post(
                    "/keys",
                    &json!({"name": name, "principal": principal, "expires_at": expires_at}),
                )
                .await?;
            if g.json {
                output::json(&k);
            } else {
                println!(
                    "created key {} for {} (expires {})",
                    k.key.id,
                    k.key.principal,
                    output::opt_time(&k.key.expires_at)
                );
                println!("secret (shown only now): {}", k.secret);
            }
        }
        KeyCmd::List { principal, page } => {
            let mut q = page.query();
            if let Some(p) = principal {
                q.push(("principal", p));
            }
            let p: Page<ApiKeyInfo> = c.get("/keys", &q).await?;
            if g.json {
                output::json(&p);
            } else {
                output::table(
                    &["id", "name", "principal", "created", "expires", "revoked", "last used"],
                    p.items
                        .iter()
                        .map(|k| {
                            vec![
                                k.id.clone(),
                                k.name.clone(),
                                k.principal.clone(),
                                output::time(&k.created_at),
                                output::opt_time(&k.expires_at),
                                output::opt_time(&k.revoked_at),
                                output::opt_time(&k.last_used_at),
                            ]
                        })
                        .collect(),
                );
                output::more(&p.next_cursor);
            }
        }
        KeyCmd::Revoke { id } => {
            let k: ApiKeyInfo = c.delete(&format!("/keys/{id}")).await?;
            if g.json { output::json(&k) } else { println!("revoked {}", k.id) }
        }
        KeyCmd::Generate => unreachable!("handled above"),
    }
    Ok(())
}

pub(super) async fn audit(g: &Global, a: AuditArgs) -> Result<()> {
    let c = connect(g)?;
    let mut q = a.page.query();
    for (k, v) in [("team", a.team), ("action", a.action), ("actor", a.actor)] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    if let Some(s) = a.since {
        q.push(("since", parse_time(&s)?));
    }
    if let Some(u) = a.until {
        q.push(("until", parse_time(&u)?));
    }
    let p: Page<AuditEntry> = c.get("/audit", &q).await?;
    if g.json {
        output::json(&p);
    } else {
        output::table(
            &["at", "actor", "team", "action", "object", "summary"],
            p.items
                .iter()
                .map(|e| {
                    let mut summary = e.summary.to_string();
                    if summary.len() > 80 {
                        summary.truncate(77);
                        summary.push_str("...");
                    }
                    vec![
                        output::time(&e.at),
                        e.actor.clone(),
                        e.team.clone().unwrap_or_else(|| "-".into()),
                        e.action.clone(),
                        e.object_name.clone(),
                        summary,
                    ]
                })
                .collect(),
        );
        output::more(&p.next_cursor);
    }
    Ok(())
}
