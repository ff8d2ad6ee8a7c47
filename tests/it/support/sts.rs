//! The embedded authorization server (`tokex sts`) in-process.

use tokio::net::TcpListener;

use super::{Got, Task, client, got};

/// `tokex sts` in-process on an ephemeral port, configured from YAML (without `listen`).
pub struct StsServer {
    pub base: String,
    _task: Task,
}

impl StsServer {
    pub async fn start(yaml: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = tokex_sts::config::parse(yaml, std::path::Path::new("sts.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let sts = tokex_sts::Sts::new(config, &base).unwrap();
        let task = tokio::spawn(sts.serve(listener, std::future::pending()));
        Self {
            base,
            _task: Task(task),
        }
    }

    /// `http://127.0.0.1:PORT/realms/{realm}/token`.
    pub fn token_endpoint(&self, realm: &str) -> String {
        format!("{}/realms/{realm}/token", self.base)
    }

    pub fn issuer(&self, realm: &str) -> String {
        format!("{}/realms/{realm}", self.base)
    }

    /// POSTs a form to a realm's token endpoint, optionally with HTTP Basic credentials.
    pub async fn post(
        &self,
        realm: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> Got {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = client()
            .post(self.token_endpoint(realm))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        got(req.send().await.unwrap()).await
    }
}

/// The claims of a JWT (unverified; tests check the STS's own output).
pub fn claims_of(token: &str) -> serde_json::Value {
    serde_json::Value::Object(tokex::jwt::unverified_claims(token).expect("a JWT"))
}
