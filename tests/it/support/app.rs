//! The app side: an HTTP client that sends to tokex, the responses it reads, and the
//! tokens it carries.

use http::HeaderMap;

use super::Sidecar;

/// A plain HTTP client that reads no proxy variables and follows no redirects.
pub fn client() -> reqwest::Client {
    app_builder().build().unwrap()
}

/// What every app-side client starts from. The TLS settings are made once: reading the
/// system's roots anew for each client would cost every request milliseconds.
pub(super) fn app_builder() -> reqwest::ClientBuilder {
    static TLS: std::sync::OnceLock<rustls::ClientConfig> = std::sync::OnceLock::new();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls =
        TLS.get_or_init(|| tokex::tls::client_config(None, None, &[b"h2", b"http/1.1"]).unwrap());
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
}

/// A response as the app sees it.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
    pub fn tokex_error(&self) -> Option<&str> {
        self.headers.get("tokex-error").map(|v| v.to_str().unwrap())
    }
}

/// GET `path` on tokex with `Host: host` and, if given, `Authorization: Bearer token`.
pub async fn get(tokex: &impl Sidecar, host: &str, path: &str, token: Option<&str>) -> Got {
    let mut req = client().get(tokex.url(path)).header("host", host);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    got(req.send().await.unwrap()).await
}

pub async fn got(resp: reqwest::Response) -> Got {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Got {
        status,
        headers,
        body,
    }
}

/// A JWT-shaped token with the given claims (unsigned: tokex never verifies it).
pub fn jwt(claims: serde_json::Value) -> String {
    use base64::Engine;
    let enc = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2ln",
        enc(&serde_json::json!({"alg": "none"})),
        enc(&claims)
    )
}

/// Seconds since the Unix epoch on tokex's clock, which paused tests advance.
pub fn now() -> u64 {
    tokex::clock::unix_now()
}
