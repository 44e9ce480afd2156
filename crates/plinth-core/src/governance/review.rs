//! Separation of duties: whose review counts.
//!
//! A review (of a promotion, or of a team's policy change) counts only when the reviewer is
//! independent of the request:
//!
//! 1. a person: service accounts never review, whoever holds their keys;
//! 2. not the author of the request;
//! 3. not whoever created the service account that made the request;
//! 4. not whoever created the API key the request was made with;
//! 5. not acting with an API key the author created (the author saw its secret).
//!
//! Each person counts once, whatever number of keys they approve with. Rules 3 to 5 close the
//! ways one person could act as two: a maintainer who creates a bot, a key for someone else, or
//! holds someone else's key.

use plinth_api::identity::PrincipalKind;

use crate::Plinth;
use crate::auth::Principal;
use crate::error::Result;
use crate::store::{Sql, col};

/// The request a review is about: who made it, with which key.
pub(crate) struct Author<'a> {
    pub id: &'a str,
    pub key_id: Option<&'a str>,
}

impl Plinth {
    /// Why `who`'s review of a request by `author` would not be independent, if it would not.
    pub(crate) async fn not_independent(
        &self,
        who: &Principal,
        author: &Author<'_>,
    ) -> Result<Option<String>> {
        if who.kind == PrincipalKind::ServiceAccount {
            return Ok(Some(
                "service accounts cannot review: a review is a person's decision".into(),
            ));
        }
        if who.id == author.id {
            return Ok(Some(
                "the author of a request cannot review it: ask another reviewer".into(),
            ));
        }
        let author_row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT kind, created_by FROM principals WHERE id = $1",
                [author.id.into()],
            ))
            .await?;
        if let Some(row) = author_row
            && col::<String>(&row, "kind")? == "service_account"
            && col::<Option<String>>(&row, "created_by")?.as_deref() == Some(who.id.as_str())
        {
            return Ok(Some(
                "you created the service account that made this request: your review would not be independent".into(),
            ));
        }
        if let Some(key) = author.key_id
            && self.key_creator(key).await?.as_deref() == Some(who.id.as_str())
        {
            return Ok(Some(
                "you created the API key this request was made with: your review would not be independent".into(),
            ));
        }
        if self.key_creator(&who.key_id).await?.as_deref() == Some(author.id) {
            return Ok(Some(
                "the author of this request created the API key you are using: create a key of your own (`plinth key create`) and review with it".into(),
            ));
        }
        Ok(None)
    }

    async fn key_creator(&self, key_id: &str) -> Result<Option<String>> {
        let row = self
            .db
            .fetch_optional(&Sql::with(
                "SELECT created_by FROM api_keys WHERE id = $1",
                [key_id.into()],
            ))
            .await?;
        row.map(|r| col::<String>(&r, "created_by")).transpose()
    }
}
