//! Online reads: many entities × many features in Feast's shapes, and the features of a
//! prediction by entity key (read as the deployment's own team).

use super::rendered::RenderedRow;
use super::*;

impl Plinth {
    /// Online read: many entities × many features, in Feast's answer shape. Without a caller,
    /// only public views answer.
    pub async fn online_features(
        &self,
        who: Option<&Principal>,
        team: &str,
        req: &OnlineRequest,
    ) -> Result<OnlineAnswer> {
        let team_id = match who {
            Some(p) => Some(self.team_ref(p, team).await?.id),
            None => None,
        };
        if req.feature_service.is_some() && team_id.is_none() {
            return Err(Error::new(
                plinth_api::Code::Unauthenticated,
                "reading a feature service needs an API key",
            ));
        }
        let refs = self
            .feature_refs(
                team_id.as_deref().unwrap_or_default(),
                req.feature_service.as_deref(),
                &req.features,
            )
            .await?;
        self.online_lookup(team_id.as_deref(), team, &refs, &req.entities).await
    }

    /// Reads online features of `team`'s views: as that team when `team_id` is given, else
    /// public views only.
    pub(crate) async fn online_lookup(
        &self,
        team_id: Option<&str>,
        team: &str,
        refs: &[String],
        entities: &std::collections::BTreeMap<String, Vec<Value>>,
    ) -> Result<OnlineAnswer> {
        // Resolve every reference to (view, position), views in first-use order.
        let mut views: Vec<Arc<ViewMeta>> = Vec::new();
        let mut cols: Vec<(usize, usize)> = Vec::with_capacity(refs.len());
        for (i, r) in refs.iter().enumerate() {
            let field = format!("features[{i}]");
            let (view, feature) = r
                .split_once(':')
                .ok_or_else(|| Error::invalid(&field, "write features as view:feature"))?;
            let meta = match views.iter().position(|v| v.name == view) {
                Some(vi) => vi,
                None => {
                    let m = self.view_meta(team, view).await.map_err(|e| e.with_field(&field))?;
                    match team_id {
                        Some(t) if t != m.team_id => {
                            return Err(Error::not_found("feature view", view).with_field(&field));
                        }
                        None if !m.public => {
                            return Err(Error::new(
                                plinth_api::Code::Unauthenticated,
                                format!("feature view '{view}' is not public: send an API key"),
                            ));
                        }
                        _ => {}
                    }
                    views.push(m);
                    views.len() - 1
                }
            };
            let pos = *views[meta].index.get(feature).ok_or_else(|| {
                Error::invalid(&field, format!("view '{view}' has no feature '{feature}'"))
            })?;
            cols.push((meta, pos));
        }
        // The entity rows: every view must take the same join keys.
        let keys = &views[0].spec.join_keys;
        for v in &views {
            if v.spec.join_keys != *keys {
                return Err(Error::invalid(
                    "features",
                    "the views take different join keys: read them in separate calls",
                ));
            }
        }
        let mut n = None;
        for k in keys {
            let vals = entities.get(&k.name).ok_or_else(|| {
                Error::missing(format!("entities.{}", k.name), "a join key of the features' entity")
            })?;
            if *n.get_or_insert(vals.len()) != vals.len() {
                return Err(Error::invalid(
                    "entities",
                    "every join key needs the same number of values",
                ));
            }
        }
        for name in entities.keys() {
            if !keys.iter().any(|k| &k.name == name) {
                return Err(Error::invalid(
                    format!("entities.{name}"),
                    "not a join key of the features' entity",
                ));
            }
        }
        let n = n.unwrap_or(0);
        if n > 10_000 {
            return Err(Error::invalid("entities", "at most 10000 entity rows per call"));
        }
        let key_cols: Vec<(&JoinKey, &Vec<Value>)> =
            keys.iter().map(|k| (k, &entities[&k.name])).collect();
        let key_texts = (0..n)
            .map(|i| {
                let mut s = String::new();
                for (j, (k, values)) in key_cols.iter().enumerate() {
                    if j > 0 {
                        s.push('\u{1f}');
                    }
                    let field = || format!("entities.{}[{i}]", k.name);
                    push_key_text(&mut s, field, k.kind, &values[i])?;
                }
                Ok(s)
            })
            .collect::<Result<Vec<String>>>()?;
        // One read per view; each stored row is decoded and rendered once (see `rendered`).
        let mut rows: Vec<Vec<Option<Arc<RenderedRow>>>> = Vec::with_capacity(views.len());
        for v in &views {
            let ks: Vec<String> = key_texts.iter().map(|k| store_key(&v.id, k)).collect();
            let stored = self.online.read(&ks).await?;
            rows.push(
                stored.iter().map(|s| s.as_ref().and_then(|s| self.rendered.get(s))).collect(),
            );
        }
        let mut names = Vec::with_capacity(keys.len() + cols.len());
        names.extend(keys.iter().map(|k| k.name.clone()));
        names
            .extend(refs.iter().map(|r| r.split_once(':').map_or(r.as_str(), |x| x.1).to_string()));
        let keys = keys.iter().map(|k| entities[&k.name].clone()).collect();
        Ok(OnlineAnswer { names, keys, cols, rows, n })
    }

    /// Checks that a version may declare a feature service: it exists in the team and gives
    /// exactly the features the signature names.
    pub(crate) async fn check_feature_service(
        &self,
        team_id: &str,
        service: &str,
        signature: &plinth_api::registry::Signature,
    ) -> Result<()> {
        let field = "metadata.feature_service";
        let refs =
            self.service_features(team_id, service).await.map_err(|e| e.with_field(field))?;
        let Some(names) = &signature.feature_names else {
            return Err(Error::invalid(
                field,
                "the signature has no feature names to match the service's features to",
            ));
        };
        let mut given: Vec<&str> =
            refs.iter().map(|r| r.split_once(':').map_or(r.as_str(), |x| x.1)).collect();
        let mut wanted: Vec<&str> = names.iter().map(String::as_str).collect();
        given.sort_unstable();
        wanted.sort_unstable();
        if given != wanted {
            return Err(Error::invalid(
                field,
                format!(
                    "feature service '{service}' gives [{}]; the model takes [{}]",
                    given.join(", "),
                    wanted.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// The feature values of entity rows for a prediction by a version of the live deployment:
    /// read through the version's feature service, as the owning team. Absent entities give
    /// nulls (missing values), as an online read does. No database read: the service's features
    /// came with the version, the views' metadata is cached.
    pub(crate) async fn prediction_features(
        &self,
        live: &crate::serving::engine::Live,
        version: &crate::serving::runner::VersionSource,
        entities: &std::collections::BTreeMap<String, Vec<Value>>,
    ) -> Result<std::collections::BTreeMap<String, Vec<Value>>> {
        let refs = version.feature_refs.as_deref().ok_or_else(|| {
            Error::invalid(
                "entities",
                "the serving version declares no feature service: send rows or columns",
            )
        })?;
        let answer = self
            .online_lookup(Some(&live.team_id), &live.team, refs, entities)
            .await
            .map_err(|e| {
                if e.field.as_deref().is_some_and(|f| f.starts_with("features")) {
                    e.with_field("entities")
                } else {
                    e
                }
            })?;
        Ok(answer.feature_values().collect())
    }

    /// The `view:feature` references of a request: a feature service's, or the list given.
    pub(super) async fn feature_refs(
        &self,
        team_id: &str,
        service: Option<&str>,
        features: &[String],
    ) -> Result<Vec<String>> {
        match (service, features.is_empty()) {
            (Some(s), true) => self.service_features(team_id, s).await,
            (None, false) => Ok(features.to_vec()),
            _ => Err(Error::invalid("features", "give either features or feature_service")),
        }
    }
}

/// An online read's answer: the entity keys, then every feature of every entity row, with its
/// status and event time. It serializes to Feast's answer shape ([`plinth_api::features::OnlineResponse`]) straight
/// from the decoded rows, without building a JSON tree or a string per cell.
#[derive(Debug)]
pub struct OnlineAnswer {
    /// The join keys' names, then the features'.
    names: Vec<String>,
    /// The join keys' values, as given.
    keys: Vec<Vec<Value>>,
    /// Per feature: its view (index into `rows`) and its position in the view's values.
    cols: Vec<(usize, usize)>,
    /// Per view, per entity row: the stored row (decoded and rendered), if any.
    rows: Vec<Vec<Option<Arc<RenderedRow>>>>,
    n: usize,
}

const NO_TIME: &str = "1970-01-01T00:00:00Z";

impl OnlineAnswer {
    /// Each feature's name and its values over the entity rows (null where absent).
    pub fn feature_values(self) -> impl Iterator<Item = (String, Vec<Value>)> {
        let OnlineAnswer { names, keys, cols, rows, .. } = self;
        names.into_iter().skip(keys.len()).zip(cols).map(move |(name, (vi, pos))| {
            let values = rows[vi]
                .iter()
                .map(|r| r.as_ref().and_then(|r| r.values.get(pos).cloned()).unwrap_or(Value::Null))
                .collect();
            (name, values)
        })
    }
}

impl OnlineAnswer {
    /// The answer as JSON in Feast's shape ([`plinth_api::features::OnlineResponse`]), written
    /// straight from the rendered rows: values, statuses and times are copied as they are;
    /// names and key values go through serde_json.
    pub fn to_json(&self) -> Vec<u8> {
        let cells = self.n * (self.keys.len() + self.cols.len());
        let mut out = Vec::with_capacity(128 + cells * 64);
        let json = |out: &mut Vec<u8>, v: &dyn erased::Json| v.write(out);
        out.extend_from_slice(b"{\"metadata\":{\"feature_names\":");
        json(&mut out, &self.names);
        out.extend_from_slice(b"},\"results\":[");
        let n = self.n;
        for (j, k) in self.keys.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            let value = |out: &mut Vec<u8>, i: usize| json(out, &k[i]);
            write_column(&mut out, n, value, |_| b"PRESENT", |_| NO_TIME);
        }
        for (j, &(vi, pos)) in self.cols.iter().enumerate() {
            if j > 0 || !self.keys.is_empty() {
                out.push(b',');
            }
            let rows = &self.rows[vi];
            let value =
                |out: &mut Vec<u8>, i: usize| match rows[i].as_ref().and_then(|r| r.json(pos)) {
                    Some(text) => out.extend_from_slice(text),
                    None => out.extend_from_slice(b"null"),
                };
            let status = |i: usize| -> &'static [u8] {
                if rows[i].is_some() { b"PRESENT" } else { b"NOT_FOUND" }
            };
            let time = |i: usize| rows[i].as_ref().map_or(NO_TIME, |r| &*r.time);
            write_column(&mut out, n, value, status, time);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// One column of an answer: `{"values": [..], "statuses": [..], "event_timestamps": [..]}`.
fn write_column<'a>(
    out: &mut Vec<u8>,
    n: usize,
    value: impl Fn(&mut Vec<u8>, usize),
    status: impl Fn(usize) -> &'static [u8],
    time: impl Fn(usize) -> &'a str,
) {
    out.extend_from_slice(b"{\"values\":[");
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        value(out, i);
    }
    out.extend_from_slice(b"],\"statuses\":[");
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(status(i));
        out.push(b'"');
    }
    out.extend_from_slice(b"],\"event_timestamps\":[");
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(time(i).as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(b"]}");
}

mod erased {
    /// Something serde_json writes (names, key values, feature values).
    pub trait Json {
        fn write(&self, out: &mut Vec<u8>);
    }

    impl<T: serde::Serialize + ?Sized> Json for T {
        fn write(&self, out: &mut Vec<u8>) {
            // Writing JSON values of these types into a Vec cannot fail.
            let _ = serde_json::to_writer(out, self);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_feasts_shape() {
        let stored = Stored {
            event_micros: 1_704_067_200_000_000,
            values: super::super::encode_values(&[json!("a"), json!(0.5)]).into(),
        };
        let row = RenderCache::new(1 << 20).get(&stored).unwrap();
        let answer = OnlineAnswer {
            names: vec!["driver_id".into(), "conv \"rate\"".into()],
            keys: vec![vec![json!(1), json!(2)]],
            cols: vec![(0, 1)],
            rows: vec![vec![Some(row), None]],
            n: 2,
        };
        let got: Value = serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(
            got,
            json!({
                "metadata": {"feature_names": ["driver_id", "conv \"rate\""]},
                "results": [
                    {"values": [1, 2], "statuses": ["PRESENT", "PRESENT"],
                     "event_timestamps": [NO_TIME, NO_TIME]},
                    {"values": [0.5, null], "statuses": ["PRESENT", "NOT_FOUND"],
                     "event_timestamps": ["2024-01-01T00:00:00Z", NO_TIME]},
                ]
            })
        );
        let typed: plinth_api::features::OnlineResponse =
            serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(typed.results.len(), 2);
    }
}
