//! Reloading from the config file: validated whole, its authorities discovered again, and
//! swapped in only when all of it is good.

use super::Proxy;

impl Proxy {
    /// Re-reads the config file this proxy was loaded from (SIGHUP or a change to the
    /// file). The new file is validated whole; on any error the running config stays in
    /// force. Counted in `tokex_config_reloads_total`.
    pub async fn reload_from_source(&self) -> Result<(), String> {
        let current = self.config();
        // The file poller compares the file with the running config's view of it. A
        // failed reload leaves that config running: without this, the poller would try
        // the same broken file again and report it twice.
        if let Some(source) = &current.source {
            source.mark_seen();
        }
        let result = match current.source.as_ref().and_then(|s| s.paths().first()) {
            None => Err("this config was not loaded from a file".to_string()),
            Some(path) => match crate::config::load(path) {
                Err(e) => Err(e.to_string()),
                Ok(c) => {
                    let kept = |name: &str| {
                        self.metrics.discovery_failures.series(&[name]).inc();
                    };
                    crate::discovery::resolve(c, Some(&current), kept)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|c| {
                            if c.listen != current.listen || c.admin != current.admin {
                                tracing::warn!("listen and admin addresses change only on restart");
                            }
                            self.reload(c).map_err(|e| e.to_string())
                        })
                }
            },
        };
        match &result {
            Ok(()) => {
                self.metrics.config_reloads.series(&["ok"]).inc();
                self.metrics.config_loaded(true);
                tracing::info!("config reloaded");
            }
            Err(e) => {
                self.metrics.config_reloads.series(&["error"]).inc();
                self.metrics.config_loaded(false);
                tracing::error!(error = %e, "config reload failed; keeping the running config");
            }
        }
        result
    }
}
