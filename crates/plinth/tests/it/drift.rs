//! `plinth drift` against Evidently: every case of `testdata/drift` (made by
//! `scripts/fixtures/gen_drift.py` with Evidently 0.7.23 itself) gives Evidently's test, threshold,
//! score and drift flag for every column, with the default choice and with each test forced.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli::Cli;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/drift")
}

/// Runs `plinth drift --json` on a case, with Evidently's column kinds and `extra` arguments.
fn drift(cli: &Cli, case: &Value, extra: &[String]) -> Value {
    let dir = testdata();
    let mut args: Vec<String> = vec![
        "drift".into(),
        "--json".into(),
        "--reference".into(),
        dir.join(case["reference_file"].as_str().unwrap()).display().to_string(),
        "--current".into(),
        dir.join(case["current_file"].as_str().unwrap()).display().to_string(),
    ];
    for (flag, key) in [("--numerical", "numerical"), ("--categorical", "categorical")] {
        for c in case[key].as_array().unwrap() {
            args.extend([flag.to_string(), c.as_str().unwrap().to_string()]);
        }
    }
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(&cli.ok(&args)).unwrap()
}

/// Scores equal within the benchmark harness's tolerance (Evidently sums categories in hash
/// order, which moves its last digits).
fn same_score(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= 1e-12 + 1e-9 * theirs.abs()
}

fn check(what: &str, ours: &Value, theirs: &Value, mismatches: &mut Vec<String>) {
    let theirs_score = match &theirs["score"] {
        Value::String(s) if s == "NaN" => f64::NAN,
        v => v.as_f64().unwrap(),
    };
    let ours_score = ours["score"].as_f64().unwrap_or(f64::NAN);
    let fine = ours["test"] == theirs["method_id"]
        && ours["threshold"].as_f64() == theirs["threshold"].as_f64()
        && ours["drifted"] == theirs["drifted"]
        && (same_score(ours_score, theirs_score) || (ours_score.is_nan() && theirs_score.is_nan()));
    if !fine {
        mismatches.push(format!("{what}: ours {ours}, Evidently's {theirs}"));
    }
}

#[test]
fn drift_equals_evidently_on_every_case_and_test() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("expected.json")).unwrap())
            .unwrap();
    let cli = Cli::new();
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for (name, case) in expected["cases"].as_object().unwrap() {
        // Evidently's default test per column.
        let ours = drift(&cli, case, &[]);
        assert_eq!(ours["rows_reference"], case["rows_reference"], "{name}");
        assert_eq!(ours["rows_current"], case["rows_current"], "{name}");
        for (column, theirs) in case["defaults"].as_object().unwrap() {
            check(
                &format!("{name}.{column} (default)"),
                &ours["columns"][column],
                theirs,
                &mut mismatches,
            );
            checked += 1;
        }
        // The dataset's drift from the columns' flags (Evidently's own count differs only where
        // its older code path keeps infinities a column has without NaN: `inf_without_nan`).
        let flags = case["dataset"]["count_of_column_flags"].as_u64().unwrap();
        let columns = case["defaults"].as_object().unwrap().len() as f64;
        assert_eq!(ours["drifted_columns"]["count"].as_u64().unwrap(), flags, "{name}");
        assert!(
            same_score(ours["drifted_columns"]["share"].as_f64().unwrap(), flags as f64 / columns),
            "{name}"
        );
        assert_eq!(ours["dataset_drift"], flags as f64 / columns >= 0.5, "{name}");
        // Each test forced on every column Evidently runs it on.
        for (method, by_column) in case["forced"].as_object().unwrap() {
            let forced: Vec<(&String, &Value)> = by_column
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, v)| v.get("refused").is_none())
                .collect();
            if forced.is_empty() {
                continue;
            }
            let mut args = Vec::new();
            for (column, _) in &forced {
                args.extend([
                    "--column".to_string(),
                    column.to_string(),
                    "--method".to_string(),
                    format!("{column}={method}"),
                ]);
            }
            let ours = drift(&cli, case, &args);
            for (column, theirs) in forced {
                check(
                    &format!("{name}.{column} ({method})"),
                    &ours["columns"][column],
                    theirs,
                    &mut mismatches,
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 220, "only {checked} values checked");
    assert!(
        mismatches.is_empty(),
        "{} of {checked} differ from Evidently:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn drift_refuses_what_it_cannot_compute_with_a_clear_error() {
    let cli = Cli::new();
    let dir = testdata();
    let (r, c) =
        (dir.join("categorical_small_reference.csv"), dir.join("categorical_small_current.csv"));
    let (r, c) = (r.display().to_string(), c.display().to_string());
    let base = ["drift", "--reference", r.as_str(), "--current", c.as_str()];
    for (extra, says) in [
        (vec!["--column", "nope"], "has no column 'nope'"),
        (
            vec!["--method", "cat4_same=magic"],
            "'magic' is not one of ks, chisquare, z, jensenshannon, wasserstein, psi",
        ),
        (
            vec!["--method", "cat4_same=wasserstein"],
            "column 'cat4_same': wasserstein needs numbers",
        ),
        (vec!["--drift-share", "2"], "--drift-share must be between 0 and 1"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let out = cli.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The human table names each column's test and verdict.
    let table = cli.ok(&base);
    assert!(table.contains("cat4_shift") && table.contains("chisquare"), "{table}");
    assert!(table.contains("columns drifted"), "{table}");
    // --out writes the harness's keys; a column's test and threshold can be chosen.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("drift.json");
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--method", "cat4_shift=jensenshannon:0.9", "--out", out.to_str().unwrap()])
        .collect();
    cli.ok(&args);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let shift = &written["columns"]["cat4_shift"];
    assert_eq!(
        (shift["test"].as_str(), shift["threshold"].as_f64()),
        (Some("jensenshannon"), Some(0.9)),
        "{written}"
    );
    assert_eq!(shift["drifted"], false, "a score under 0.9 does not drift: {written}");
    assert!(
        written["rows_reference"].as_u64().unwrap() > 0
            && written["rows_current"].as_u64().unwrap() > 0
    );
    for key in ["count", "share", "drift_share"] {
        assert!(written["drifted_columns"][key].is_number(), "{key}: {written}");
    }
}
