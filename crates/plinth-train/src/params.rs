//! Training parameters under LightGBM's names, aliases and defaults, so a data scientist's
//! settings carry over: `num_leaves`, `learning_rate`, `min_data_in_leaf`, `feature_fraction`...
//! Unknown names are refused (a typo must not silently train something else).

use std::collections::BTreeMap;

use serde_json::Value;

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Squared error (`regression`, `regression_l2`, `l2`, `mse`).
    Regression,
    /// Huber loss with `alpha` as its threshold.
    Huber,
    /// Log loss on labels 0/1.
    Binary,
    /// Softmax over `num_class` classes, labels 0..num_class-1.
    Multiclass,
}

impl Objective {
    pub fn parse(s: &str) -> Option<Objective> {
        Some(match s {
            "regression"
            | "regression_l2"
            | "l2"
            | "mean_squared_error"
            | "mse"
            | "l2_root"
            | "root_mean_squared_error"
            | "rmse" => Objective::Regression,
            "huber" => Objective::Huber,
            "binary" => Objective::Binary,
            "multiclass" | "softmax" => Objective::Multiclass,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Objective::Regression => "regression",
            Objective::Huber => "huber",
            Objective::Binary => "binary",
            Objective::Multiclass => "multiclass",
        }
    }

    pub fn is_classification(self) -> bool {
        matches!(self, Objective::Binary | Objective::Multiclass)
    }
}

/// Gradient-boosting parameters (LightGBM's names; defaults are LightGBM's).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    pub objective: Objective,
    pub num_class: usize,
    pub num_iterations: usize,
    pub learning_rate: f64,
    pub num_leaves: usize,
    /// `<= 0`: no limit.
    pub max_depth: i64,
    pub min_data_in_leaf: usize,
    pub min_sum_hessian_in_leaf: f64,
    pub lambda_l1: f64,
    pub lambda_l2: f64,
    pub min_gain_to_split: f64,
    pub max_delta_step: f64,
    pub bagging_fraction: f64,
    pub bagging_freq: usize,
    pub bagging_seed: u64,
    pub feature_fraction: f64,
    pub feature_fraction_seed: u64,
    pub max_bin: usize,
    pub min_data_in_bin: usize,
    pub bin_construct_sample_cnt: usize,
    pub data_random_seed: u64,
    pub early_stopping_round: usize,
    /// Names of the features to split as categories (string columns always are).
    pub categorical_feature: Vec<String>,
    pub max_cat_to_onehot: usize,
    pub max_cat_threshold: usize,
    pub cat_l2: f64,
    pub cat_smooth: f64,
    pub min_data_per_group: usize,
    /// Huber's threshold.
    pub alpha: f64,
    pub boost_from_average: bool,
    /// Whether each iteration reports the training metric (a pass over every row).
    pub is_provide_training_metric: bool,
    /// 0: every core.
    pub num_threads: usize,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            objective: Objective::Regression,
            num_class: 1,
            num_iterations: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            max_depth: -1,
            min_data_in_leaf: 20,
            min_sum_hessian_in_leaf: 1e-3,
            lambda_l1: 0.0,
            lambda_l2: 0.0,
            min_gain_to_split: 0.0,
            max_delta_step: 0.0,
            bagging_fraction: 1.0,
            bagging_freq: 0,
            bagging_seed: 3,
            feature_fraction: 1.0,
            feature_fraction_seed: 2,
            max_bin: 255,
            min_data_in_bin: 3,
            bin_construct_sample_cnt: 200_000,
            data_random_seed: 1,
            early_stopping_round: 0,
            categorical_feature: Vec::new(),
            max_cat_to_onehot: 4,
            max_cat_threshold: 32,
            cat_l2: 10.0,
            cat_smooth: 10.0,
            min_data_per_group: 100,
            alpha: 0.9,
            boost_from_average: true,
            is_provide_training_metric: false,
            num_threads: 0,
        }
    }
}

/// A parameter that is unknown or out of range: `field` names it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ParamError {}

fn bad(field: &str, reason: impl Into<String>) -> ParamError {
    ParamError { field: field.to_string(), reason: reason.into() }
}

/// LightGBM's aliases, to the canonical name.
fn canonical(name: &str) -> &str {
    match name {
        "objective_type" | "app" | "application" | "loss" => "objective",
        "num_iteration" | "n_iter" | "num_tree" | "num_trees" | "num_round" | "num_rounds"
        | "nrounds" | "num_boost_round" | "n_estimators" | "max_iter" => "num_iterations",
        "shrinkage_rate" | "eta" => "learning_rate",
        "num_leaf" | "max_leaves" | "max_leaf" | "max_leaf_nodes" => "num_leaves",
        "min_data_per_leaf" | "min_data" | "min_child_samples" | "min_samples_leaf" => {
            "min_data_in_leaf"
        }
        "min_sum_hessian_per_leaf" | "min_sum_hessian" | "min_hessian" | "min_child_weight" => {
            "min_sum_hessian_in_leaf"
        }
        "reg_alpha" | "l1_regularization" => "lambda_l1",
        "reg_lambda" | "lambda" | "l2_regularization" => "lambda_l2",
        "min_split_gain" => "min_gain_to_split",
        "max_leaf_output" | "max_tree_output" => "max_delta_step",
        "sub_row" | "subsample" | "bagging" => "bagging_fraction",
        "subsample_freq" => "bagging_freq",
        "bagging_fraction_seed" => "bagging_seed",
        "sub_feature" | "colsample_bytree" => "feature_fraction",
        "max_bins" => "max_bin",
        "subsample_for_bin" => "bin_construct_sample_cnt",
        "data_seed" => "data_random_seed",
        "early_stopping_rounds" | "early_stopping" | "n_iter_no_change" => "early_stopping_round",
        "cat_feature" | "categorical_column" | "cat_column" | "categorical_features" => {
            "categorical_feature"
        }
        "random_seed" | "random_state" => "seed",
        "num_thread" | "nthread" | "nthreads" | "n_jobs" => "num_threads",
        "num_classes" => "num_class",
        "training_metric" | "is_training_metric" | "train_metric" => "is_provide_training_metric",
        other => other,
    }
}

impl Params {
    /// Parameters from a JSON object of LightGBM names (or aliases) to values; numbers may be
    /// given as strings, as on LightGBM's command line. `seed`, when given, derives the other
    /// seeds as LightGBM does.
    pub fn from_json(map: &BTreeMap<String, Value>) -> Result<Params, ParamError> {
        let mut p = Params::default();
        let mut seed = None;
        for (name, value) in map {
            let key = canonical(name);
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
                Value::Null => continue,
                Value::Object(_) => return Err(bad(name, "must be a number, a string or a list")),
            };
            let float = || -> Result<f64, ParamError> {
                text.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(name, format!("'{text}' is not a number")))
            };
            let int = || -> Result<i64, ParamError> {
                let v = float()?;
                if v.fract() != 0.0 {
                    return Err(bad(name, format!("'{text}' is not a whole number")));
                }
                Ok(v as i64)
            };
            let count = |min: i64| -> Result<usize, ParamError> {
                let v = int()?;
                if v < min {
                    return Err(bad(name, format!("must be at least {min}, got {v}")));
                }
                Ok(v as usize)
            };
            let non_negative = || -> Result<f64, ParamError> {
                let v = float()?;
                if v < 0.0 {
                    return Err(bad(name, format!("must not be negative, got {v}")));
                }
                Ok(v)
            };
            let fraction = || -> Result<f64, ParamError> {
                let v = float()?;
                if !(v > 0.0 && v <= 1.0) {
                    return Err(bad(name, format!("must be in (0, 1], got {v}")));
                }
                Ok(v)
            };
            let boolean = || -> Result<bool, ParamError> {
                match text.trim() {
                    "true" | "1" | "+" => Ok(true),
                    "false" | "0" | "-" => Ok(false),
                    _ => Err(bad(name, format!("'{text}' is not true or false"))),
                }
            };
            match key {
                "objective" => {
                    p.objective = Objective::parse(text.trim()).ok_or_else(|| {
                        bad(
                            name,
                            format!(
                                "'{text}' is not a supported objective (binary, multiclass, \
                                 regression, huber)"
                            ),
                        )
                    })?
                }
                "num_class" => p.num_class = count(1)?,
                "num_iterations" => p.num_iterations = count(1)?,
                "learning_rate" => {
                    p.learning_rate = float()?;
                    if p.learning_rate <= 0.0 {
                        return Err(bad(name, "must be positive"));
                    }
                }
                "num_leaves" => {
                    p.num_leaves = count(2)?;
                    if p.num_leaves > 131_072 {
                        return Err(bad(name, "must be at most 131072"));
                    }
                }
                "max_depth" => p.max_depth = int()?,
                "min_data_in_leaf" => p.min_data_in_leaf = count(0)?,
                "min_sum_hessian_in_leaf" => p.min_sum_hessian_in_leaf = non_negative()?,
                "lambda_l1" => p.lambda_l1 = non_negative()?,
                "lambda_l2" => p.lambda_l2 = non_negative()?,
                "min_gain_to_split" => p.min_gain_to_split = non_negative()?,
                "max_delta_step" => p.max_delta_step = float()?,
                "bagging_fraction" => p.bagging_fraction = fraction()?,
                "bagging_freq" => p.bagging_freq = count(0)?,
                "bagging_seed" => p.bagging_seed = int()? as u64,
                "feature_fraction" => p.feature_fraction = fraction()?,
                "feature_fraction_seed" => p.feature_fraction_seed = int()? as u64,
                "max_bin" => {
                    p.max_bin = count(2)?;
                    if p.max_bin > 255 {
                        return Err(bad(name, "must be at most 255 (bins are one byte)"));
                    }
                }
                "min_data_in_bin" => p.min_data_in_bin = count(1)?,
                "bin_construct_sample_cnt" => p.bin_construct_sample_cnt = count(1)?,
                "data_random_seed" => p.data_random_seed = int()? as u64,
                "early_stopping_round" => p.early_stopping_round = count(0)?,
                "categorical_feature" => {
                    p.categorical_feature = text
                        .split(',')
                        .map(|s| s.trim().trim_start_matches("name:").to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                }
                "max_cat_to_onehot" => p.max_cat_to_onehot = count(1)?,
                "max_cat_threshold" => p.max_cat_threshold = count(1)?,
                "cat_l2" => p.cat_l2 = non_negative()?,
                "cat_smooth" => p.cat_smooth = non_negative()?,
                "min_data_per_group" => p.min_data_per_group = count(1)?,
                "alpha" => p.alpha = non_negative()?,
                "boost_from_average" => p.boost_from_average = boolean()?,
                "is_provide_training_metric" => p.is_provide_training_metric = boolean()?,
                "num_threads" => p.num_threads = count(0)?,
                "seed" => seed = Some(int()? as u64),
                "verbose" | "verbosity" | "metric" | "task" | "boosting" | "boosting_type" => {
                    if (key == "boosting" || key == "boosting_type") && text.trim() != "gbdt" {
                        return Err(bad(name, "only 'gbdt' boosting is supported"));
                    }
                }
                _ => return Err(bad(name, "not a known training parameter")),
            }
        }
        if let Some(seed) = seed {
            // LightGBM derives each seed from `seed` with its own generator; ours differ in
            // value but, like LightGBM's, are fixed by it.
            let mut r = crate::rng::Rng::new(seed);
            p.data_random_seed = r.next_u64() % 1_000_000;
            p.bagging_seed = r.next_u64() % 1_000_000;
            p.feature_fraction_seed = r.next_u64() % 1_000_000;
        }
        match p.objective {
            // Multiclass takes its classes from the data; a num_class given must match them.
            Objective::Multiclass => {}
            _ if p.num_class != 1 => {
                return Err(bad(
                    "num_class",
                    format!("only multiclass takes num_class (objective {})", p.objective.name()),
                ));
            }
            _ => {}
        }
        Ok(p)
    }

    /// The effective thread count.
    pub fn threads(&self) -> usize {
        if self.num_threads > 0 {
            self.num_threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }

    /// The parameters as LightGBM writes them in a model's `parameters:` section.
    pub fn lightgbm_lines(&self) -> Vec<String> {
        vec![
            format!("[objective: {}]", self.objective.name()),
            format!("[num_class: {}]", self.num_class),
            format!("[num_iterations: {}]", self.num_iterations),
            format!("[learning_rate: {}]", self.learning_rate),
            format!("[num_leaves: {}]", self.num_leaves),
            format!("[max_depth: {}]", self.max_depth),
            format!("[min_data_in_leaf: {}]", self.min_data_in_leaf),
            format!("[min_sum_hessian_in_leaf: {}]", self.min_sum_hessian_in_leaf),
            format!("[lambda_l1: {}]", self.lambda_l1),
            format!("[lambda_l2: {}]", self.lambda_l2),
            format!("[min_gain_to_split: {}]", self.min_gain_to_split),
            format!("[bagging_fraction: {}]", self.bagging_fraction),
            format!("[bagging_freq: {}]", self.bagging_freq),
            format!("[bagging_seed: {}]", self.bagging_seed),
            format!("[feature_fraction: {}]", self.feature_fraction),
            format!("[feature_fraction_seed: {}]", self.feature_fraction_seed),
            format!("[max_bin: {}]", self.max_bin),
            format!("[early_stopping_round: {}]", self.early_stopping_round),
            format!("[max_cat_to_onehot: {}]", self.max_cat_to_onehot),
            format!("[max_cat_threshold: {}]", self.max_cat_threshold),
            format!("[cat_l2: {}]", self.cat_l2),
            format!("[cat_smooth: {}]", self.cat_smooth),
            format!("[alpha: {}]", self.alpha),
        ]
    }
}
