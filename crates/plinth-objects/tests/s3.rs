//! The artifact stores' one conformance suite against a real S3 server: moto's, started by
//! `scripts/services.sh` (`PLINTH_TEST_S3_ENDPOINT`, default `http://127.0.0.1:5999`), with a
//! bucket of this run's own.

use plinth_core::store::artifacts::{Staging, conformance};
use plinth_objects::{S3Artifacts, S3Options};

fn endpoint() -> String {
    std::env::var("PLINTH_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5999".into())
}

/// Creates a bucket with a plain PUT (moto takes any credentials).
async fn bucket() -> String {
    let name = format!("plinth-test-{}", uuid_like());
    let url = format!("{}/{name}", endpoint());
    let status = std::process::Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", &url])
        .output()
        .expect("curl");
    assert!(
        status.status.success(),
        "the S3 server at {} answers (scripts/services.sh starts moto): {status:?}",
        endpoint()
    );
    name
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    format!("{:x}{:x}", t.as_nanos(), std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_passes_the_artifact_store_suite() {
    let bucket = bucket().await;
    let store = S3Artifacts::open(&S3Options {
        url: format!("s3://{bucket}/plinth"),
        endpoint: Some(endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let staging = Staging::open(dir.path().join("staging")).unwrap();
    conformance::check(&store, &staging, "suite").await;
}
