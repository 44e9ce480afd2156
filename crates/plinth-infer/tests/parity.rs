//! Predictions equal the source library's (to 1e-5) for every model in `testdata/models`:
//! scikit-learn (via skl2onnx), LightGBM (text and via onnxmltools) and XGBoost (JSON and via
//! onnxmltools); binary, multiclass and regression. The expected values were computed by the
//! libraries themselves (`scripts/fixtures/gen_models.py`).

use std::path::{Path, PathBuf};

use plinth_api::registry::ModelFormat;
use plinth_infer::{Data, Tensor};
use serde_json::Value;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/models")
}

fn models() -> Vec<(String, ModelFormat)> {
    let mut out: Vec<(String, ModelFormat)> = std::fs::read_dir(testdata())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let format = if name.ends_with(".onnx") {
                ModelFormat::Onnx
            } else if name.ends_with(".txt") {
                ModelFormat::Lightgbm
            } else if name.ends_with(".json")
                && !name.ends_with(".expected.json")
                && name != "manifest.json"
            {
                ModelFormat::Xgboost
            } else {
                return None;
            };
            Some((name, format))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn expected(model: &str) -> Value {
    let stem = model.rsplit_once('.').unwrap().0;
    serde_json::from_str(
        &std::fs::read_to_string(testdata().join(format!("{stem}.expected.json"))).unwrap(),
    )
    .unwrap()
}

fn rows(exp: &Value) -> (Vec<f32>, usize, usize) {
    let rows = exp["rows"].as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let values = rows
        .iter()
        .flat_map(|r| {
            r.as_array().unwrap().iter().map(|v| v.as_f64().map(|x| x as f32).unwrap_or(f32::NAN))
        })
        .collect();
    (values, rows.len(), cols)
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    match &t.data {
        Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        Data::F64(v) => v.clone(),
        Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
        other => panic!("unexpected output type {other:?}"),
    }
}

#[test]
fn every_model_matches_its_source_library() {
    let all = models();
    assert!(all.len() >= 16, "fixtures missing: {all:?}");
    let mut report = Vec::new();
    for (name, format) in all {
        let bytes = std::fs::read(testdata().join(&name)).unwrap();
        let model = plinth_infer::load(format, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        if format != ModelFormat::Onnx {
            let registered = plinth_formats::inspect(&bytes).unwrap().signature.unwrap();
            assert_eq!(
                registered.outputs,
                model.outputs(),
                "{name}: the registry's signature must be what the runtime answers"
            );
            assert_eq!(registered.inputs, model.inputs(), "{name}");
        }
        let exp = expected(&name);
        let (x, n, cols) = rows(&exp);
        let input = model.inputs()[0].name.clone();
        let out = model
            .run(&[(input.as_str(), &Tensor::f32(vec![n, cols], x))])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out.len(), model.outputs().len(), "{name}: outputs");
        let task = exp["task"].as_str().unwrap();
        let want = exp["predictions"].as_array().unwrap();
        let mut max_diff: f64 = 0.0;
        if task == "regression" {
            let got = as_f64(&out[0].1);
            assert_eq!(got.len(), n, "{name}: {:?}", out[0].1.shape);
            for (g, w) in got.iter().zip(want) {
                max_diff = max_diff.max((g - w.as_f64().unwrap()).abs());
            }
        } else {
            let probs = out
                .iter()
                .find(|(k, t)| k.contains("prob") && t.shape.len() == 2)
                .unwrap_or_else(|| panic!("{name}: no probabilities in {out:?}"));
            let got = as_f64(&probs.1);
            let classes = want[0].as_array().unwrap().len();
            assert_eq!(probs.1.shape, vec![n, classes], "{name}");
            for (i, w) in want.iter().enumerate() {
                for (j, w) in w.as_array().unwrap().iter().enumerate() {
                    max_diff = max_diff.max((got[i * classes + j] - w.as_f64().unwrap()).abs());
                }
            }
            let labels = out
                .iter()
                .find(|(k, _)| k.contains("label"))
                .unwrap_or_else(|| panic!("{name}: no label output"));
            let got: Vec<i64> = as_f64(&labels.1).into_iter().map(|v| v as i64).collect();
            let want: Vec<i64> =
                exp["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
            assert_eq!(got, want, "{name}: labels");
        }
        report.push(format!("{name}: max abs diff {max_diff:.2e}"));
        assert!(
            max_diff <= 1e-5,
            "{name}: predictions differ from the source library by {max_diff}"
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn malformed_models_are_refused_with_the_place_named() {
    for (file, format, needle) in [
        ("bad/truncated.onnx", ModelFormat::Onnx, "truncated"),
        ("bad/garbage.onnx", ModelFormat::Onnx, "onnx"),
        ("bad/truncated_lightgbm.txt", ModelFormat::Lightgbm, "end of trees"),
        ("bad/bad_child_lightgbm.txt", ModelFormat::Lightgbm, "Tree="),
        ("bad/missing_field_xgboost.json", ModelFormat::Xgboost, "split_conditions"),
        ("bad/bad_index_xgboost.json", ModelFormat::Xgboost, "trees["),
        ("bad/empty.bin", ModelFormat::Onnx, "graph"),
        ("bad/tree_feature_past_width.onnx", ModelFormat::Onnx, "has 6 columns"),
        ("bad/tree_child_nowhere.onnx", ModelFormat::Onnx, "does not exist"),
    ] {
        let bytes = std::fs::read(testdata().join(file)).unwrap();
        let err = plinth_infer::load(format, &bytes).expect_err(file).to_string();
        assert!(err.contains(needle), "{file}: '{err}' does not mention '{needle}'");
    }
}

/// Random inputs, NaN and infinities included: every model answers, none panics.
#[test]
fn odd_inputs_never_crash_a_model() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (name, format) in models() {
        let bytes = std::fs::read(testdata().join(&name)).unwrap();
        let model = plinth_infer::load(format, &bytes).unwrap();
        let cols = model.inputs()[0].shape[1] as usize;
        let n = 257;
        let x: Vec<f32> = (0..n * cols)
            .map(|_| match next() % 10 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -f32::INFINITY,
                3 => 0.0,
                _ => (next() % 20_000) as f32 - 10_000.0,
            })
            .collect();
        let out = model
            .run(&[("input", &Tensor::f32(vec![n, cols], x))])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(out.iter().all(|(_, t)| t.shape[0] == n), "{name}");
        // Wrong width and wrong type are errors, not panics.
        assert!(
            model.run(&[("input", &Tensor::f32(vec![1, cols + 1], vec![0.0; cols + 1]))]).is_err(),
            "{name}"
        );
    }
}

/// onnxmltools writes LightGBM's categorical splits as chains of `BRANCH_EQ` nodes sharing
/// their true child: trees that are DAGs. onnxruntime serves them; so does Plinth, with the
/// same answers, on the file the real converter wrote.
#[test]
fn trees_with_shared_subtrees_answer_as_onnxruntime_does() {
    let name = "lightgbm_categorical_binary.onnx";
    let exp = expected(name);
    let shared = exp["shared_nodes"].as_array().expect("shared_nodes");
    assert!(!shared.is_empty(), "the fixture must have nodes reached from two parents");
    let bytes = std::fs::read(testdata().join(name)).unwrap();
    plinth_formats::inspect(&bytes).expect("valid at upload");
    let model = plinth_infer::load(ModelFormat::Onnx, &bytes).expect("loads");
    let (x, n, cols) = rows(&exp);
    let out = model.run(&[("input", &Tensor::f32(vec![n, cols], x))]).unwrap();
    let probs = out.iter().find(|(k, _)| k == "probabilities").expect("probabilities");
    let got = as_f64(&probs.1);
    let want: Vec<f64> = exp["onnxruntime_probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len());
    let diff = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
    assert!(diff <= 1e-6, "differs from onnxruntime by {diff}");
    let labels = out.iter().find(|(k, _)| k == "label").expect("label");
    let want_labels: Vec<f64> =
        exp["onnxruntime_labels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(as_f64(&labels.1), want_labels);
}
