//! The point-in-time join against DuckDB's ASOF LEFT JOIN on real data: NYC flights of January
//! 2013 joined to the latest weather observation at their origin within 45 minutes
//! (`scripts/fixtures/gen_pit.py` wrote the inputs and DuckDB's answer).

use std::path::PathBuf;

use arrow::array::{Array, Float64Array};
use plinth_data::pit::{PitSpec, pit_join};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/pit").join(name)
}

#[test]
fn flights_join_weather_as_duckdb_does() {
    let flights = plinth_data::read_parquet_file(&fixture("flights.parquet")).unwrap();
    let weather = plinth_data::read_parquet_file(&fixture("weather.parquet")).unwrap();
    let expected = plinth_data::read_parquet_file(&fixture("expected.parquet")).unwrap();
    let expected = arrow::compute::concat_batches(&expected[0].schema(), &expected).unwrap();
    let spec = PitSpec {
        keys: vec!["origin".into()],
        entity_timestamp: "sched_dep_utc".into(),
        feature_timestamp: "time_hour".into(),
        created_timestamp: None,
        ttl_micros: Some(45 * 60 * 1_000_000),
        features: None,
    };
    let got = pit_join(&flights, &weather, &spec).unwrap();
    assert_eq!(got.num_rows(), 27_004, "every flight is kept");
    assert_eq!(got.schema().fields().len(), expected.schema().fields().len());
    let mut nulls = 0;
    for (i, field) in expected.schema().fields().iter().enumerate() {
        let name = field.name();
        let g = got.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let want = expected.column(i);
        if let Some(w) = want.as_any().downcast_ref::<Float64Array>() {
            let g = g.as_any().downcast_ref::<Float64Array>().unwrap();
            for r in 0..w.len() {
                assert_eq!(g.is_null(r), w.is_null(r), "{name} row {r}: null positions differ");
                if w.is_valid(r) {
                    assert_eq!(g.value(r).to_bits(), w.value(r).to_bits(), "{name} row {r}");
                }
            }
            nulls += w.null_count();
        } else {
            assert_eq!(g.as_ref(), want.as_ref(), "column {name}");
        }
    }
    assert!(nulls > 4_000, "the 45-minute TTL leaves flights without weather: {nulls}");
}
