//! The trainers against the real libraries: models Plinth trains are loaded by the `lightgbm`
//! package (and the linear ones by `onnxruntime`) and predict what Plinth's own evaluator
//! predicts; on Adult and Ames they reach LightGBM's quality with the same parameters and split
//! (reference values from `scripts/fixtures/gen_train.py`).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::Command;

use plinth_api::registry::ModelFormat;
use plinth_core::data::{ColumnData, FileFormat, Table, TableReader};
use plinth_core::serving::tensor::{Data, Tensor};
use plinth_train::data::Mapper;
use plinth_train::linear::{LinearParams, train_linear};
use plinth_train::{Columns, Params, Trained, train_gbdt};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/train").join(name)
}

fn read_csv(name: &str) -> Table {
    let bytes = std::fs::read(testdata(name)).expect("testdata");
    plinth_data::Tables.read(bytes, FileFormat::Csv).expect("csv")
}

fn python() -> String {
    std::env::var("PLINTH_TEST_PYTHON")
        .expect("PLINTH_TEST_PYTHON: run the suite with scripts/test, which makes a virtualenv with lightgbm and onnxruntime")
}

fn params(json: serde_json::Value) -> Params {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_value(json).unwrap();
    Params::from_json(&map).unwrap()
}

fn no_progress() -> impl FnMut(&plinth_train::Progress) -> ControlFlow<()> {
    |_| ControlFlow::Continue(())
}

/// Rows of a table as the f32 matrix serving takes: strings become their category code in the
/// trained model (missing or unseen: NaN).
fn encode(t: &Table, trained: &Trained, mappers: &[Mapper]) -> (Vec<f32>, usize) {
    let nf = trained.feature_names.len();
    let mut x = vec![f32::NAN; t.rows * nf];
    for (f, name) in trained.feature_names.iter().enumerate() {
        let col = &t.column(name).expect("feature column").data;
        for r in 0..t.rows {
            let v: Option<f64> = match col {
                ColumnData::Float64(v) => v[r],
                ColumnData::Int64(v) => v[r].map(|x| x as f64),
                ColumnData::Bool(v) => v[r].map(|b| b as u8 as f64),
                ColumnData::Str { dict, codes } => codes[r].and_then(|c| match &mappers[f] {
                    Mapper::Categorical { names: Some(names), .. } => {
                        names.iter().position(|n| *n == dict[c as usize]).map(|p| p as f64)
                    }
                    _ => None,
                }),
                ColumnData::Timestamp(_) => None,
            };
            x[r * nf + f] = v.map_or(f32::NAN, |v| v as f32);
        }
    }
    (x, nf)
}

/// Plinth's evaluator on the rows: probabilities (`rows × classes`) or predictions.
fn plinth_predict(format: ModelFormat, model: &[u8], x: &[f32], nf: usize) -> (Vec<f64>, usize) {
    let m = plinth_infer::load(format, model).expect("Plinth loads its own model");
    let rows = x.len() / nf;
    let input = Tensor::f32(vec![rows, nf], x.to_vec());
    let out = m.run(&[("input", &input)]).expect("predicts");
    let (_, t) = out
        .iter()
        .find(|(n, _)| n == "probabilities" || n == "predictions" || n == "variable")
        .expect("a score output");
    let values = match &t.data {
        Data::F32(v) => v.iter().map(|&v| v as f64).collect::<Vec<f64>>(),
        other => panic!("unexpected output {other:?}"),
    };
    let width = values.len() / rows.max(1);
    (values, width)
}

fn write_matrix(path: &std::path::Path, x: &[f32], nf: usize) {
    let mut s = String::new();
    for row in x.chunks(nf) {
        let line: Vec<String> =
            row.iter().map(|v| if v.is_nan() { "nan".into() } else { format!("{v:e}") }).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// The `lightgbm` package's predictions for the model file on the rows.
fn lightgbm_predict(model: &str, x: &[f32], nf: usize) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let (mp, xp) = (dir.path().join("model.txt"), dir.path().join("x.csv"));
    std::fs::write(&mp, model).unwrap();
    write_matrix(&xp, x, nf);
    let script = "import sys, json, numpy as np, lightgbm as lgb\n\
        b = lgb.Booster(model_file=sys.argv[1])\n\
        x = np.loadtxt(sys.argv[2], delimiter=',', dtype=np.float32, ndmin=2).astype(np.float64)\n\
        print(json.dumps(np.asarray(b.predict(x)).ravel().tolist()))";
    let out = Command::new(python()).args(["-c", script]).arg(&mp).arg(&xp).output().unwrap();
    assert!(out.status.success(), "lightgbm failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn onnxruntime_predict(model: &[u8], x: &[f32], nf: usize) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let (mp, xp) = (dir.path().join("model.onnx"), dir.path().join("x.csv"));
    std::fs::write(&mp, model).unwrap();
    write_matrix(&xp, x, nf);
    let script = "import sys, json, numpy as np, onnxruntime as ort\n\
        s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
        x = np.loadtxt(sys.argv[2], delimiter=',', dtype=np.float32, ndmin=2)\n\
        outs = s.run(None, {'input': x})\n\
        print(json.dumps(np.asarray(outs[-1], dtype=np.float64).ravel().tolist()))";
    let out = Command::new(python()).args(["-c", script]).arg(&mp).arg(&xp).output().unwrap();
    assert!(out.status.success(), "onnxruntime failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_close(plinth: &[f64], reference: &[f64], relative: bool, what: &str) {
    assert_within(plinth, reference, relative, 1e-6, what)
}

fn assert_within(plinth: &[f64], reference: &[f64], relative: bool, tol: f64, what: &str) {
    assert_eq!(plinth.len(), reference.len(), "{what}: lengths");
    let mut worst = 0.0f64;
    for (i, (a, b)) in plinth.iter().zip(reference).enumerate() {
        let scale = if relative { b.abs().max(1.0) } else { 1.0 };
        let d = (a - b).abs() / scale;
        worst = worst.max(d);
        assert!(d <= tol, "{what}: value {i}: Plinth {a} vs reference {b}");
    }
    eprintln!("{what}: {} values, worst difference {worst:e}", plinth.len());
}

fn split(t: &Table, test: impl Fn(usize) -> bool) -> (Table, Table) {
    let is_test: Vec<bool> = (0..t.rows).map(test).collect();
    let is_train: Vec<bool> = is_test.iter().map(|x| !x).collect();
    (t.filter(&is_train), t.filter(&is_test))
}

fn mappers_of(table: &Table, cols: &Columns, p: &Params) -> Vec<Mapper> {
    let mut src = vec![table.clone()];
    let c = Columns { classify: p.objective.is_classification(), ..cols.clone() };
    plinth_train::data::build(&mut src, &c, p).unwrap().mappers
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(testdata("expected.json")).unwrap()).unwrap()
}

fn adult() -> (Table, Table, Columns) {
    let t = read_csv("adult.csv.gz");
    let ColumnData::Str { dict, codes } = &t.column("split").unwrap().data else { panic!() };
    let is_test: Vec<bool> = codes.iter().map(|c| dict[c.unwrap() as usize] == "test").collect();
    let (train, test) = split(&t, |r| is_test[r]);
    let features = t
        .columns
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| !["income", "split", "income_gt_50k"].contains(&n.as_str()))
        .collect();
    (
        train,
        test,
        Columns { features, label: "income_gt_50k".into(), valid_fraction: 0.0, classify: true },
    )
}

fn ames() -> (Table, Table, Columns) {
    let t = read_csv("ames.csv.gz");
    let (train, test) = split(&t, |r| r % 5 == 0);
    let features = t.columns.iter().map(|c| c.name.clone()).filter(|n| n != "Sale_Price").collect();
    (
        train,
        test,
        Columns { features, label: "Sale_Price".into(), valid_fraction: 0.0, classify: false },
    )
}

#[test]
fn adult_reaches_lightgbm_auc_and_lightgbm_loads_the_model() {
    let (train, test, cols) = adult();
    let p = params(serde_json::json!({"objective": "binary", "seed": 0}));
    let trained = train_gbdt(&mut vec![train.clone()], &cols, &p, &mut no_progress()).unwrap();
    let mappers = mappers_of(&train, &cols, &p);
    let (x, nf) = encode(&test, &trained, &mappers);
    let (probs, width) = plinth_predict(ModelFormat::Lightgbm, trained.model.as_bytes(), &x, nf);
    assert_eq!(width, 2);
    let p1: Vec<f64> = probs.chunks(2).map(|c| c[1]).collect();
    let y: Vec<bool> = match &test.column("income_gt_50k").unwrap().data {
        ColumnData::Int64(v) => v.iter().map(|v| *v == Some(1)).collect(),
        other => panic!("label {other:?}"),
    };
    let auc = plinth_core::eval::metrics::roc_auc(&y, &p1).unwrap();
    let reference = expected()["adult_auc"].as_f64().unwrap();
    eprintln!("adult AUC: Plinth {auc:.6}, LightGBM {reference:.6}");
    assert!(auc >= reference - 0.005, "AUC {auc} is more than 0.005 below LightGBM's {reference}");
    // The real lightgbm reads the file and predicts the same (categorical splits included).
    let theirs = lightgbm_predict(&trained.model, &x[..2000 * nf], nf);
    assert_close(&p1[..2000], &theirs, false, "adult binary");
}

#[test]
fn ames_reaches_lightgbm_rmse_and_lightgbm_loads_the_model() {
    let (train, test, cols) = ames();
    let p = params(serde_json::json!({"objective": "regression", "seed": 0}));
    let trained = train_gbdt(&mut vec![train.clone()], &cols, &p, &mut no_progress()).unwrap();
    let mappers = mappers_of(&train, &cols, &p);
    let (x, nf) = encode(&test, &trained, &mappers);
    let (pred, _) = plinth_predict(ModelFormat::Lightgbm, trained.model.as_bytes(), &x, nf);
    let y: Vec<f64> = match &test.column("Sale_Price").unwrap().data {
        ColumnData::Int64(v) => v.iter().map(|v| v.unwrap() as f64).collect(),
        ColumnData::Float64(v) => v.iter().map(|v| v.unwrap()).collect(),
        other => panic!("label {other:?}"),
    };
    let rmse =
        (pred.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
    let reference = expected()["ames_rmse"].as_f64().unwrap();
    eprintln!("ames RMSE: Plinth {rmse:.1}, LightGBM {reference:.1}");
    assert!(rmse <= reference * 1.02, "RMSE {rmse} is more than 2 % above LightGBM's {reference}");
    let theirs = lightgbm_predict(&trained.model, &x, nf);
    // Serving answers f32: compare relative to the value (house prices are ~10^5).
    assert_close(&pred, &theirs, true, "ames regression");
}

/// Synthetic rows: numeric features with missing values, an integer categorical feature and a
/// string one; the class depends on all of them.
fn synthetic(rows: usize, classes: usize) -> Table {
    let mut rng = plinth_train::rng::Rng::new(7);
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut cat = Vec::new();
    let mut color = Vec::new();
    let mut y = Vec::new();
    let colors = ["red", "green", "blue", "amber", "violet", "teal"];
    for _ in 0..rows {
        let x1 = rng.next_f64() * 10.0 - 5.0;
        let x2 = rng.next_f64() * 4.0;
        let c = rng.below(12) as i64;
        let k = rng.below(colors.len() as u64) as u32;
        let missing = rng.next_f64() < 0.1;
        let score = x1
            + if c % 3 == 0 { 2.0 } else { -1.0 }
            + if k == 2 || k == 4 { 1.5 } else { 0.0 }
            + if missing { 3.0 } else { x2 - 2.0 }
            + rng.next_f64() * 2.0;
        let label = if classes == 2 {
            (score > 0.5) as i64
        } else {
            ((score + 4.0) / 3.0).clamp(0.0, classes as f64 - 1.0) as i64
        };
        a.push(Some(x1));
        b.push(if missing { None } else { Some(x2) });
        cat.push(Some(c));
        color.push(Some(k));
        y.push(Some(label));
    }
    let col = |name: &str, data| plinth_core::data::Column { name: name.into(), data };
    Table {
        rows,
        columns: vec![
            col("a", ColumnData::Float64(a)),
            col("b", ColumnData::Float64(b)),
            col("store", ColumnData::Int64(cat)),
            col(
                "color",
                ColumnData::Str {
                    dict: colors.iter().map(|s| s.to_string()).collect(),
                    codes: color,
                },
            ),
            col("y", ColumnData::Int64(y)),
        ],
    }
}

fn synthetic_columns() -> Columns {
    Columns {
        features: vec!["a".into(), "b".into(), "store".into(), "color".into()],
        label: "y".into(),
        valid_fraction: 0.2,
        classify: true,
    }
}

#[test]
fn multiclass_with_categories_and_missing_values_round_trips_through_lightgbm() {
    let t = synthetic(6000, 4);
    let cols = synthetic_columns();
    let p = params(serde_json::json!({
        "objective": "multiclass", "num_iterations": 30, "categorical_feature": ["store"],
        "early_stopping_round": 5, "seed": 1
    }));
    let trained = train_gbdt(&mut vec![t.clone()], &cols, &p, &mut no_progress()).unwrap();
    assert!(trained.model.contains("num_cat="), "categorical splits are written");
    assert!(trained.model.lines().any(|l| l.starts_with("num_cat=") && l != "num_cat=0"));
    assert!(trained.valid_rows > 1000 && trained.booster.history.iter().all(|h| h.valid.is_some()));
    let mappers = mappers_of(&t, &cols, &p);
    let (x, nf) = encode(&t, &trained, &mappers);
    let (probs, width) =
        plinth_predict(ModelFormat::Lightgbm, trained.model.as_bytes(), &x[..1500 * nf], nf);
    assert_eq!(width, 4);
    let theirs = lightgbm_predict(&trained.model, &x[..1500 * nf], nf);
    assert_close(&probs, &theirs, false, "multiclass");
}

#[test]
fn binary_with_bagging_is_deterministic_and_round_trips() {
    let t = synthetic(5000, 2);
    let cols = Columns { valid_fraction: 0.0, ..synthetic_columns() };
    let p = params(serde_json::json!({
        "objective": "binary", "num_iterations": 40, "bagging_fraction": 0.7, "bagging_freq": 1,
        "feature_fraction": 0.75, "lambda_l1": 0.5, "lambda_l2": 1.0, "max_depth": 4, "seed": 42
    }));
    let one = train_gbdt(&mut vec![t.clone()], &cols, &p, &mut no_progress()).unwrap();
    let two = train_gbdt(&mut vec![t.clone()], &cols, &p, &mut no_progress()).unwrap();
    assert_eq!(one.model, two.model, "the same seed trains the same model");
    let other = params(serde_json::json!({
        "objective": "binary", "num_iterations": 40, "bagging_fraction": 0.7, "bagging_freq": 1,
        "feature_fraction": 0.75, "lambda_l1": 0.5, "lambda_l2": 1.0, "max_depth": 4, "seed": 43
    }));
    let three = train_gbdt(&mut vec![t.clone()], &cols, &other, &mut no_progress()).unwrap();
    assert_ne!(one.model, three.model, "another seed samples other rows");
    let mappers = mappers_of(&t, &cols, &p);
    let (x, nf) = encode(&t, &one, &mappers);
    let (probs, _) = plinth_predict(ModelFormat::Lightgbm, one.model.as_bytes(), &x, nf);
    let p1: Vec<f64> = probs.chunks(2).map(|c| c[1]).collect();
    assert_close(&p1, &lightgbm_predict(&one.model, &x, nf), false, "binary with bagging");
    // Depth is bounded.
    let model = plinth_formats::lightgbm::parse(one.model.as_bytes()).unwrap();
    assert!(model.trees.iter().all(|t| t.num_leaves <= 16));
}

#[test]
fn cancelling_stops_training() {
    let t = synthetic(2000, 2);
    let p = params(serde_json::json!({"objective": "binary", "num_iterations": 50}));
    let mut seen = 0;
    let r = train_gbdt(&mut vec![t], &synthetic_columns(), &p, &mut |s| {
        seen = s.iteration;
        if s.iteration == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    });
    assert_eq!(r.unwrap_err(), plinth_train::TrainError::Cancelled);
    assert_eq!(seen, 3);
}

#[test]
fn bad_parameters_and_data_name_the_field() {
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({"num_leafs": 10})).unwrap();
    assert_eq!(Params::from_json(&map).unwrap_err().field, "num_leafs");
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({"learning_rate": -1})).unwrap();
    assert_eq!(Params::from_json(&map).unwrap_err().field, "learning_rate");
    let p = params(serde_json::json!({"objective": "binary"}));
    let cols = Columns { label: "nope".into(), ..synthetic_columns() };
    let e = train_gbdt(&mut vec![synthetic(100, 2)], &cols, &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("label") && e.to_string().contains("nope"), "{e}");
    let four = synthetic(500, 4);
    let e = train_gbdt(&mut vec![four], &synthetic_columns(), &p, &mut no_progress()).unwrap_err();
    assert!(e.to_string().contains("binary needs exactly two classes"), "{e}");
}

#[test]
fn linear_and_logistic_regression_round_trip_through_onnxruntime() {
    // Logistic on Adult's numeric columns.
    let (train, test, _) = adult();
    let features: Vec<String> =
        ["age", "education_num", "capital_gain", "capital_loss", "hours_per_week", "fnlwgt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let cols = Columns {
        features: features.clone(),
        label: "income_gt_50k".into(),
        valid_fraction: 0.0,
        classify: true,
    };
    let fit =
        train_linear(&mut vec![train], &cols, true, &LinearParams::default(), &mut no_progress())
            .unwrap();
    assert!(fit.iterations >= 3 && fit.iterations < 100);
    let onnx = fit.onnx();
    let nf = features.len();
    let mut x = vec![0f32; test.rows * nf];
    for (f, name) in features.iter().enumerate() {
        let ColumnData::Int64(v) = &test.column(name).unwrap().data else { panic!("{name}") };
        for r in 0..test.rows {
            x[r * nf + f] = v[r].map_or(f32::NAN, |v| v as f32);
        }
    }
    x[3] = f32::NAN; // a missing value takes the training mean
    let (probs, width) = plinth_predict(ModelFormat::Onnx, &onnx, &x, nf);
    assert_eq!(width, 2);
    let theirs = onnxruntime_predict(&onnx, &x, nf);
    assert_close(&probs, &theirs, false, "logistic");
    let y: Vec<bool> = match &test.column("income_gt_50k").unwrap().data {
        ColumnData::Int64(v) => v.iter().map(|v| *v == Some(1)).collect(),
        _ => panic!(),
    };
    let p1: Vec<f64> = probs.chunks(2).map(|c| c[1]).collect();
    let auc = plinth_core::eval::metrics::roc_auc(&y, &p1).unwrap();
    assert!(auc > 0.8, "logistic AUC {auc}");
    // Ridge regression on Ames' numeric columns.
    let (train, test, _) = ames();
    let features: Vec<String> =
        ["Lot_Area", "Year_Built", "Gr_Liv_Area", "Total_Bsmt_SF", "Garage_Cars", "Full_Bath"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let cols = Columns {
        features: features.clone(),
        label: "Sale_Price".into(),
        valid_fraction: 0.0,
        classify: false,
    };
    let fit =
        train_linear(&mut vec![train], &cols, false, &LinearParams::default(), &mut no_progress())
            .unwrap();
    let onnx = fit.onnx();
    let nf = features.len();
    let mut x = vec![0f32; test.rows * nf];
    for (f, name) in features.iter().enumerate() {
        let col = &test.column(name).unwrap().data;
        for r in 0..test.rows {
            x[r * nf + f] = match col {
                ColumnData::Int64(v) => v[r].map_or(f32::NAN, |v| v as f32),
                ColumnData::Float64(v) => v[r].map_or(f32::NAN, |v| v as f32),
                _ => panic!("{name}"),
            };
        }
    }
    let (pred, _) = plinth_predict(ModelFormat::Onnx, &onnx, &x, nf);
    let theirs = onnxruntime_predict(&onnx, &x, nf);
    // onnxruntime sums the terms in f32 (about 7 significant digits, here terms near 10^5
    // that nearly cancel); Plinth sums in f64 and rounds once. Equal to f32's resolution.
    assert_within(&pred, &theirs, true, 1e-5, "linear");
    // A string feature is refused, naming it.
    let (train, _, _) = ames();
    let cols = Columns { features: vec!["Neighborhood".into()], ..cols };
    let e =
        train_linear(&mut vec![train], &cols, false, &LinearParams::default(), &mut no_progress())
            .unwrap_err();
    assert!(e.to_string().contains("features.Neighborhood"), "{e}");
}
