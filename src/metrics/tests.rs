use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::error::Code;

/// Counters and histograms render in the OpenMetrics text format with cumulative
/// buckets; tokex's own answers carry their code, the upstream's an empty one.
#[test]
fn renders_openmetrics_text() {
    let m = Arc::new(Metrics::default());
    let r = RouteMetrics::new(&m, "payments");
    r.record(200, None, Duration::from_micros(300));
    r.record(200, None, Duration::from_millis(30));
    r.record(
        503,
        Some(Code::AuthorityUnavailable),
        Duration::from_secs(20),
    );
    r.record(502, None, Duration::from_millis(1));
    r.hit();
    let none = RouteMetrics::unrouted(&m);
    none.record(404, Some(Code::NoRoute), Duration::from_micros(1));
    let text = m.render(7);
    let has = |line: &str| assert!(text.contains(&format!("{line}\n")), "{line} in:\n{text}");
    has("tokex_requests_total{route=\"none\",status=\"404\",code=\"no_route\"} 1");
    has("tokex_requests_total{route=\"payments\",status=\"200\",code=\"\"} 2");
    has("tokex_requests_total{route=\"payments\",status=\"502\",code=\"\"} 1");
    has("tokex_requests_total{route=\"payments\",status=\"503\",code=\"authority_unavailable\"} 1");
    // Known series start at 0; a route never answers no_route, the unrouted only that.
    has("tokex_requests_total{route=\"payments\",status=\"502\",code=\"upstream_unavailable\"} 0");
    assert!(!text.contains("route=\"payments\",status=\"404\",code=\"no_route\""));
    assert!(!text.contains("route=\"none\",status=\"502\""));
    assert!(!text.contains("tokex_cache_hits_total{route=\"none\"}"));
    has("tokex_request_duration_seconds_bucket{le=\"0.0005\",route=\"payments\"} 1");
    has("tokex_request_duration_seconds_bucket{le=\"0.05\",route=\"payments\"} 3");
    has("tokex_request_duration_seconds_bucket{le=\"+Inf\",route=\"payments\"} 4");
    has("tokex_request_duration_seconds_count{route=\"payments\"} 4");
    has("tokex_cache_hits_total{route=\"payments\"} 1");
    has("tokex_cache_misses_total{route=\"payments\"} 0");
    has("tokex_cache_entries 7");
    has("tokex_config_reloads_total{result=\"error\"} 0");
    has("tokex_config_last_reload_successful 1");
    has(&format!(
        "tokex_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(text.ends_with("# EOF\n"));
}

/// The process series come from /proc and are plausible.
#[test]
fn process_series() {
    let text = Metrics::default().render(0);
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let start = value("process_start_time_seconds");
    let now = crate::clock::unix_now() as f64;
    assert!(
        start <= now + 1.0 && start > now - 86400.0,
        "{start} vs {now}"
    );
}

/// The last-reload gauge stays 0 from a refused config until the next good one, which
/// sets it back to 1; the success timestamp moves only with a good one.
#[test]
fn last_reload_gauge_follows_the_last_result() {
    let m = Metrics::default();
    let gauge = |text: &str, name: &str| -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in:\n{text}"))
            .parse()
            .unwrap()
    };
    let loaded_at = gauge(
        &m.render(0),
        "tokex_config_last_reload_success_timestamp_seconds",
    );
    m.config_last_success.set(loaded_at - 100);
    m.config_loaded(false);
    let text = m.render(0);
    assert_eq!(gauge(&text, "tokex_config_last_reload_successful"), 0);
    assert_eq!(
        gauge(&text, "tokex_config_last_reload_success_timestamp_seconds"),
        loaded_at - 100,
        "a refused config is no success"
    );
    m.config_loaded(false);
    assert_eq!(
        gauge(&m.render(0), "tokex_config_last_reload_successful"),
        0
    );
    m.config_loaded(true);
    let text = m.render(0);
    assert_eq!(gauge(&text, "tokex_config_last_reload_successful"), 1);
    assert!(gauge(&text, "tokex_config_last_reload_success_timestamp_seconds") >= loaded_at);
}
