//! The Helm chart (`deploy/helm/plinth`): it lints, renders manifests that Kubernetes' schemas
//! accept in each of its shapes, refuses secrets in its config, and the config it renders is one
//! Plinth starts with, here on S3 (moto) as a replica would.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reqwest::StatusCode;

use crate::harness::{Server, fresh_bucket};

/// A tool `scripts/test` installs and names in an environment variable.
fn tool(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: scripts/test installs it and sets it"))
}

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm/plinth")
}

/// `helm template` with these `--set` values: the rendered manifests, or helm's error.
fn render(sets: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(tool("PLINTH_TEST_HELM"));
    cmd.args(["template", "prod"]).arg(chart());
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Validates manifests against Kubernetes 1.31's schemas, unknown fields refused.
fn validate(manifests: &str) {
    use std::io::Write;
    let mut child = Command::new(tool("PLINTH_TEST_KUBERNETES_VALIDATE"))
        .args(["--strict", "-k", "1.31", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubernetes-validate");
    child.stdin.take().unwrap().write_all(manifests.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !report.contains("ERROR"), "{report}\n{manifests}");
    assert!(report.matches("passed for resource").count() >= 3, "{report}");
}

/// The manifest of this kind, from a rendered stream.
fn manifest<'a>(manifests: &'a str, kind: &str) -> Option<&'a str> {
    manifests.split("\n---\n").find(|m| m.lines().any(|l| l == format!("kind: {kind}")))
}

#[test]
fn the_helm_chart_lints_and_renders_valid_manifests() {
    let lint = Command::new(tool("PLINTH_TEST_HELM"))
        .args(["lint", "--strict"])
        .arg(chart())
        .output()
        .unwrap();
    assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));

    // The defaults: a Deployment with both probes and a grace period that covers Plinth's own,
    // the Service, the ConfigMap, a PodDisruptionBudget, no autoscaler.
    let defaults = render(&[]).unwrap();
    validate(&defaults);
    let deployment = manifest(&defaults, "Deployment").unwrap();
    for needed in [
        "path: /readyz",
        "path: /healthz",
        "replicas: 2",
        "terminationGracePeriodSeconds: 35",
        "name: PLINTH_DATABASE_URL",
        "key: database-url",
        "key: s3-secret-access-key",
        "key: online-store-url",
        "value: /etc/plinth/plinth.toml",
    ] {
        assert!(deployment.contains(needed), "the Deployment lacks `{needed}`:\n{deployment}");
    }
    assert!(!deployment.contains("PLINTH_METRICS_TOKEN"), "a secret key left empty is not passed");
    assert!(manifest(&defaults, "Service").is_some());
    assert!(manifest(&defaults, "PodDisruptionBudget").unwrap().contains("maxUnavailable: 1"));
    assert!(manifest(&defaults, "HorizontalPodAutoscaler").is_none());

    // Autoscaled: the HPA owns the replica count.
    let scaled = render(&[
        "autoscaling.enabled=true",
        "autoscaling.maxReplicas=6",
        "podDisruptionBudget.enabled=false",
    ])
    .unwrap();
    validate(&scaled);
    let hpa = manifest(&scaled, "HorizontalPodAutoscaler").unwrap();
    assert!(
        hpa.contains("apiVersion: autoscaling/v2")
            && hpa.contains("maxReplicas: 6")
            && hpa.contains("name: cpu"),
        "{hpa}"
    );
    assert!(!manifest(&scaled, "Deployment").unwrap().contains("replicas:"));
    assert!(manifest(&scaled, "PodDisruptionBudget").is_none());

    // Secrets never go in the ConfigMap; a lease outside Plinth's range is refused before it
    // reaches a pod.
    for bad in [
        "config.database_url=postgres://u:p@db/plinth",
        "config.task_lease_seconds=2",
        "service.type=Magic",
    ] {
        let err = render(&[bad]).unwrap_err();
        assert!(err.contains("schema"), "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_the_chart_renders_is_one_plinth_starts_with() {
    let s3 = fresh_bucket().await;
    let rendered = render(&[
        &format!("config.object_store_url={}", s3.url),
        &format!("config.s3_endpoint={}", s3.endpoint.clone().unwrap()),
        "config.s3_region=us-east-1",
        "config.log_level=warn",
    ])
    .unwrap();
    validate(&rendered);
    let configmap = manifest(&rendered, "ConfigMap").unwrap();
    let toml: String = configmap
        .lines()
        .skip_while(|l| !l.contains("plinth.toml: |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(toml.contains("object_store_url = \"s3://"), "{toml}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plinth.toml");
    std::fs::write(&config, &toml).unwrap();
    // The harness's flags put the listener on port 0 and the data in a temporary folder, as the
    // chart's pod has its own; the credentials come from the environment, as from the Secret.
    let (_, admin_key, _) = plinth_core::auth::generate_key();
    let server = Server::spawn_with(
        &dir.path().join("data"),
        &admin_key,
        None,
        &[
            ("PLINTH_CONFIG", config.display().to_string()),
            ("PLINTH_S3_ACCESS_KEY_ID", s3.access_key_id.unwrap()),
            ("PLINTH_S3_SECRET_ACCESS_KEY", s3.secret_access_key.unwrap()),
        ],
    );
    let ready = reqwest::get(format!("{}/readyz", server.url)).await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
