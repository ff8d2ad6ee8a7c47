//! The shipped monitoring artifacts read only what tokex serves: every metric and label
//! the alert rules, the Grafana dashboard and the metrics reference of
//! docs/observability.md name is on the `/metrics` of a running tokex, and the reference
//! lists every metric served. A renamed metric, label or label value fails here rather
//! than in a silent panel or an alert that can never fire.

mod queries;
mod served;

use std::collections::BTreeSet;
use std::path::Path;

use crate::support::*;
use queries::{Reads, grafana, reads};
use served::{SCRAPE_LABELS, Served};

const RULES: &str = "deploy/helm/tokex/files/prometheus-rules.yaml";
const DASHBOARD: &str = "deploy/helm/tokex/files/grafana-dashboard.json";
const REFERENCE: &str = "docs/observability.md";

/// Every query of the alert rules and the dashboard selects served metrics, matches on
/// served labels (and, for `=`, served values) and groups by served labels; the metrics
/// reference lists exactly the served metrics with their labels.
#[tokio::test(start_paused = true)]
async fn rules_dashboard_and_reference_match_what_metrics_serves() {
    let served = Served::parse(&scrape_after_traffic().await);
    let mut problems = Vec::new();
    for (source, query) in rule_queries().into_iter().chain(dashboard_queries()) {
        match reads(&query) {
            Ok(r) => problems.extend(
                unserved(&served, &r)
                    .iter()
                    .map(|p| format!("{source}: {p}")),
            ),
            Err(e) => problems.push(format!("{source}: does not parse: {e}\n  {query}")),
        }
    }
    problems.extend(reference_problems(&served));
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// A tokex that served a request, failed an exchange, refused a reload and presents a
/// client assertion and a client certificate; its `/metrics` after that.
async fn scrape_after_traffic() -> String {
    let (as_, up) = (MockAs::start().await, Upstream::start().await);
    let dir = tempfile::tempdir().unwrap();
    let assertion = dir.path().join("assertion");
    std::fs::write(&assertion, jwt(serde_json::json!({"exp": now() + 3600}))).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["tokex".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let yaml = config(&as_, &up.url())
        .replace(
            "auth: { method: client_secret_basic, client_secret: test-client-secret }",
            &format!(
                "auth: {{ method: client_assertion, assertion_file: {} }}",
                assertion.display()
            ),
        )
        .replace(
            "routes:\n",
            &format!(
                "  mtls:
    token_endpoint: https://127.0.0.1:9/token
    client_id: tokex-test
    auth: {{ method: tls_client_auth, cert_file: {}, key_file: {} }}
routes:\n",
                cert_file.display(),
                key_file.display()
            ),
        );
    let tokex = Tokex::start_in(dir, &yaml).await;
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t1")).await.status,
        200
    );
    assert_eq!(
        get(&tokex, "nowhere.internal", "/", Some("t1"))
            .await
            .tokex_error(),
        Some("no_route")
    );
    as_.on(|_, _| Reply::json(400, serde_json::json!({"error": "access_denied"})));
    assert_eq!(
        get(&tokex, "echo.internal", "/", Some("t2"))
            .await
            .tokex_error(),
        Some("exchange_denied")
    );
    std::fs::write(tokex.dir.path().join("tokex.yaml"), "routes: [ oops").unwrap();
    assert!(tokex.proxy.reload_from_source().await.is_err());
    tokex.metrics().await
}

/// Each alert's `expr`, named by the alert.
fn rule_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(RULES)).unwrap();
    let rules: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            let expr = rule["expr"].as_str().unwrap();
            out.push((format!("{RULES} {name}"), expr.to_string()));
        }
    }
    assert!(out.len() >= 10, "{RULES} has its alerts");
    out
}

/// Each panel target's `expr` and each variable's `label_values(...)`, as queries.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join(DASHBOARD)).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    let panels = dashboard["panels"].as_array().unwrap();
    let nested = panels
        .iter()
        .filter_map(|p| p["panels"].as_array())
        .flatten();
    for panel in panels.iter().chain(nested) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            let expr = target["expr"].as_str().unwrap();
            out.push((format!("{DASHBOARD} \"{title}\""), grafana(expr)));
        }
    }
    assert!(out.len() >= 20, "{DASHBOARD} has its panels");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(q) = variable["query"]["query"].as_str() else {
            continue;
        };
        // label_values(SELECTOR, LABEL): the selector must serve the label.
        let (selector, label) = q
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .unwrap_or_else(|| panic!("variable query {q}"));
        let name = variable["name"].as_str().unwrap();
        let query = format!("count by ({}) ({})", label.trim(), grafana(selector));
        out.push((format!("{DASHBOARD} variable ${name}"), query));
    }
    out
}

/// What `r` reads that `served` does not serve.
fn unserved(served: &Served, r: &Reads) -> Vec<String> {
    let mut problems = Vec::new();
    let mut labels: BTreeSet<&str> = SCRAPE_LABELS.into_iter().collect();
    for s in &r.selectors {
        let Some(sample) = served.sample(&s.metric) else {
            problems.push(format!("{} is not served", s.metric));
            continue;
        };
        labels.extend(sample.keys().map(String::as_str));
        for (label, equal, value) in &s.matchers {
            match sample.get(label) {
                None if SCRAPE_LABELS.contains(&label.as_str()) => {}
                None => problems.push(format!("{} has no label {label}", s.metric)),
                Some(values) if *equal && !values.contains(value) => problems.push(format!(
                    "{}{{{label}=\"{value}\"}} is not served (values: {values:?})",
                    s.metric
                )),
                Some(_) => {}
            }
        }
    }
    for label in &r.grouping {
        if !labels.contains(label.as_str()) {
            problems.push(format!("groups by {label}, which no metric it reads has"));
        }
    }
    problems
}

/// The metrics reference table: one row per metric, `name` then its label names.
fn reference_problems(served: &Served) -> Vec<String> {
    let text = std::fs::read_to_string(root().join(REFERENCE)).unwrap();
    let table = text
        .split("\n## ")
        .find(|s| s.starts_with("Metrics reference"))
        .expect("a \"Metrics reference\" section");
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let names = backticked(cells[1]);
        let want: BTreeSet<&str> = backticked(cells[2]).into_iter().collect();
        for name in names {
            listed.insert(name.to_string());
            match served.labels_of(name) {
                None => problems.push(format!("{REFERENCE} lists {name}, which is not served")),
                Some(got) if got != want => problems.push(format!(
                    "{REFERENCE}: {name} has labels {got:?}, the reference says {want:?}"
                )),
                Some(_) => {}
            }
        }
    }
    for name in served.metrics().difference(&listed) {
        problems.push(format!("{REFERENCE} does not list {name}"));
    }
    problems
}

fn backticked(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
