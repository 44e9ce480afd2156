//! Point-in-time correct training sets, saved as dataset versions with their lineage.

use super::*;

impl Plinth {
    /// Builds a point-in-time correct training set and saves it as a dataset version whose
    /// source records the entity dataset, the features and the views' datasets (lineage).
    pub async fn create_training_set(
        &self,
        who: &Principal,
        team: &str,
        req: CreateTrainingSet,
    ) -> Result<plinth_api::data::DatasetVersion> {
        let t = self.team_ref(who, team).await?;
        who.require(&t, TeamRole::Developer, "building a training set")?;
        check_name("name", &req.name)?;
        let refs = self.feature_refs(&t.id, req.feature_service.as_deref(), &req.features).await?;
        let ents = self.resolve_dataset(&t, &req.entities, "entities").await?;
        let entity_ts = req.entity_timestamp.clone().unwrap_or_else(|| "event_timestamp".into());
        let find = |name: &str| ents.info.columns.iter().find(|c| c.name == name);
        match find(&entity_ts) {
            Some(c) if c.kind == ColumnType::Timestamp => {}
            Some(c) => {
                return Err(Error::invalid(
                    "entity_timestamp",
                    format!(
                        "column '{entity_ts}' holds {} values, not timestamps",
                        c.kind.as_str()
                    ),
                ));
            }
            None => {
                return Err(Error::invalid(
                    "entity_timestamp",
                    format!("the entity dataset has no column '{entity_ts}'"),
                ));
            }
        }
        // Group the references by view, in first-use order.
        let mut groups: Vec<(Arc<ViewMeta>, Vec<String>)> = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            let field = format!("features[{i}]");
            let (view, feature) = r
                .split_once(':')
                .ok_or_else(|| Error::invalid(&field, "write features as view:feature"))?;
            let meta = self.view_meta(&t.name, view).await.map_err(|e| e.with_field(&field))?;
            if !meta.index.contains_key(feature) {
                return Err(Error::invalid(
                    &field,
                    format!("view '{view}' has no feature '{feature}'"),
                ));
            }
            match groups.iter_mut().find(|(m, _)| m.id == meta.id) {
                Some((_, cols)) => cols.push(feature.to_string()),
                None => groups.push((meta, vec![feature.to_string()])),
            }
        }
        let mut joins = Vec::with_capacity(groups.len());
        let mut lineage = Vec::new();
        for (meta, columns) in groups {
            for k in &meta.spec.join_keys {
                match find(&k.name) {
                    Some(c) if c.kind == k.kind => {}
                    _ => {
                        return Err(Error::invalid(
                            "entities",
                            format!(
                                "the entity dataset needs join key '{}' ({}) of view '{}'",
                                k.name,
                                k.kind.as_str(),
                                meta.name
                            ),
                        ));
                    }
                }
            }
            let src = self.resolve_dataset(&t, &meta.spec.source, "features").await?;
            lineage.push(format!("{}@{}@{}", meta.name, src.info.dataset, src.info.version));
            joins.push(crate::data::PitJoin {
                features: self.dataset_bytes(&src.id).await?,
                format: crate::data::FileFormat::parse(&src.info.format)
                    .unwrap_or(crate::data::FileFormat::Csv),
                keys: meta.spec.join_keys.iter().map(|k| k.name.clone()).collect(),
                entity_timestamp: entity_ts.clone(),
                feature_timestamp: meta.spec.timestamp_field.clone(),
                created_timestamp: meta.spec.created_timestamp_field.clone(),
                ttl_micros: (meta.spec.ttl_seconds > 0)
                    .then_some(meta.spec.ttl_seconds as i64 * 1_000_000),
                columns,
            });
        }
        let entities = self.dataset_bytes(&ents.id).await?;
        let format = crate::data::FileFormat::parse(&ents.info.format)
            .unwrap_or(crate::data::FileFormat::Csv);
        let tables = self.tables.clone();
        let parquet =
            tokio::task::spawn_blocking(move || tables.point_in_time(entities, format, joins))
                .await
                .map_err(Error::internal)?
                .map_err(|e| Error::new(plinth_api::Code::InvalidData, e).with_field("entities"))?;
        let staged = self.staging().receive(&mut parquet.as_slice(), u64::MAX).await?;
        let source = format!(
            "training set: entities {}@{} as of '{entity_ts}'; features {}; views {}",
            ents.info.dataset,
            ents.info.version,
            refs.join(", "),
            lineage.join(", ")
        );
        let upload = plinth_api::data::UploadDataset {
            format: Some("parquet".into()),
            source: Some(source),
            description: None,
        };
        self.upload_dataset(who, team, &req.name, upload, staged).await
    }
}
