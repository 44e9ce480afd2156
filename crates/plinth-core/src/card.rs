//! Validation of model cards and lineage records.

use plinth_api::registry::{Lineage, LineageSource, ModelCard};

use crate::error::{Error, Result};
use crate::util::check_text;

pub fn check_card(card: &ModelCard) -> Result<()> {
    for (field, value) in [
        ("card.intended_use", &card.intended_use),
        ("card.limitations", &card.limitations),
        ("card.ethical_considerations", &card.ethical_considerations),
        ("card.training_data", &card.training_data),
        ("card.evaluation_data", &card.evaluation_data),
    ] {
        if let Some(v) = value {
            check_text(field, v, 20_000)?;
        }
    }
    if let Some(owners) = &card.owners {
        for (i, o) in owners.iter().enumerate() {
            check_text(&format!("card.owners[{i}]"), o, 200)?;
        }
    }
    Ok(())
}

pub fn check_lineage(l: &Lineage) -> Result<()> {
    for (field, value) in [
        ("lineage.dataset_version", &l.dataset_version),
        ("lineage.code_ref", &l.code_ref),
        ("lineage.training_job", &l.training_job),
    ] {
        if let Some(v) = value {
            check_text(field, v, 1_000)?;
        }
    }
    if l.source == LineageSource::TrainingJob && l.training_job.is_none() {
        return Err(Error::missing("lineage.training_job", "lineage.source is training_job"));
    }
    if l.parameters.len() > 1_000 || l.metrics.len() > 1_000 || l.tags.len() > 1_000 {
        return Err(Error::invalid("lineage", "at most 1000 parameters, metrics and tags each"));
    }
    for (k, v) in &l.metrics {
        if !v.is_finite() {
            return Err(Error::invalid(format!("lineage.metrics.{k}"), "must be a finite number"));
        }
    }
    for (k, v) in l.parameters.iter().chain(l.tags.iter()) {
        check_text(&format!("lineage.{k}"), k, 250)?;
        check_text(&format!("lineage.{k}"), v, 5_000)?;
    }
    Ok(())
}
