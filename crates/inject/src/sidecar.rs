//! The containers and volumes the webhook adds, as Kubernetes types: the same sidecar as
//! the hand-written one of `deploy/kubernetes/deployment.yaml` (a native sidecar: an init
//! container with `restartPolicy: Always`), and for transparent pods the `tokex init`
//! container of `deploy/kubernetes/transparent/`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    HTTPGetAction, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
    SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::{Options, SIDECAR_CONTAINER};
use crate::config::{InjectConfig, Resources};

/// The uid and default gid tokex runs as: distroless' `nonroot`, and the default
/// `transparent.proxy_uid`, whose connections the redirect lets through.
pub const TOKEX_UID: i64 = 65532;
/// The ConfigMap directory; `tokex.yaml` in it is the config.
pub const CONFIG_DIR: &str = "/etc/tokex";
pub const CONFIG_FILE: &str = "/etc/tokex/tokex.yaml";
pub const CREDENTIALS_DIR: &str = "/var/run/secrets/tokex";
pub const TOKENS_DIR: &str = "/var/run/secrets/tokens";
/// The projected token's file name under [`TOKENS_DIR`].
pub const TOKEN_PATH: &str = "tokex";
pub const INIT_CONTAINER: &str = "tokex-init";

pub const CONFIG_VOLUME: &str = "tokex-config";
pub const CREDENTIALS_VOLUME: &str = "tokex-credentials";
pub const TOKEN_VOLUME: &str = "tokex-token";
pub const INIT_RUN_VOLUME: &str = "tokex-init-run";

/// The admin port's name, which the probes and the PodMonitor use.
const ADMIN_PORT_NAME: &str = "tokex-admin";
/// Group-readable, for the sidecar only: 0440.
const SECRET_MODE: i32 = 0o440;
/// The kubelet renews a projected token at 80% of this.
const TOKEN_SECONDS: i64 = 3600;

/// The tokex sidecar for a pod, running with group `gid` (see `patch::fs_group`).
pub fn container(config: &InjectConfig, options: &Options, gid: i64) -> Container {
    let probe = |path: &str, period, failures, timeout| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: timeout,
        ..Default::default()
    };
    let mut mounts = vec![mount(CONFIG_VOLUME, CONFIG_DIR)];
    if options.credentials.is_some() {
        mounts.push(mount(CREDENTIALS_VOLUME, CREDENTIALS_DIR));
    }
    if options.token_audience.is_some() {
        mounts.push(mount(TOKEN_VOLUME, TOKENS_DIR));
    }
    Container {
        name: SIDECAR_CONTAINER.to_string(),
        image: Some(config.image.clone()),
        image_pull_policy: config.image_pull_policy.map(|p| p.as_str().to_string()),
        restart_policy: Some("Always".to_string()),
        args: Some(
            ["run", "--config", CONFIG_FILE, "--log-format", "json"]
                .map(String::from)
                .to_vec(),
        ),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        env: Some(vec![EnvVar {
            name: "RUST_LOG".to_string(),
            value: Some("info".to_string()),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_string()),
            container_port: i32::from(config.sidecar.admin_port),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        // Startup and readiness on /readyz: the app starts once tokex has its config and
        // listeners. Liveness only asks whether the process answers, never the AS.
        startup_probe: Some(probe("/readyz", 1, 30, None)),
        readiness_probe: Some(probe("/readyz", 5, 2, None)),
        liveness_probe: Some(probe("/healthz", 10, 3, Some(2))),
        resources: Some(resources(&options.resources)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(TOKEX_UID),
            run_as_group: Some(gid),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// `tokex init` for transparent pods: installs the redirect as root with the four
/// capabilities it needs and proves it, then exits.
pub fn init_container(config: &InjectConfig) -> Container {
    let q = |s: &str| Quantity(s.to_string());
    Container {
        name: INIT_CONTAINER.to_string(),
        image: Some(config.init_image.clone()),
        image_pull_policy: config.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(["init", "--config", CONFIG_FILE].map(String::from).to_vec()),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("10m")),
                ("memory".to_string(), q("32Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), q("64Mi"))])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            run_as_group: Some(0),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: Some(
                    ["NET_ADMIN", "NET_RAW", "SETUID", "SETGID"]
                        .map(String::from)
                        .to_vec(),
                ),
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount(CONFIG_VOLUME, CONFIG_DIR),
            // iptables-legacy takes its lock in /run; the root filesystem is read-only.
            VolumeMount {
                name: INIT_RUN_VOLUME.to_string(),
                mount_path: "/run".to_string(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// The volumes the sidecar (and `tokex init`) mount, in the order they are added.
pub fn volumes(options: &Options) -> Vec<Volume> {
    // The config is a directory, never subPath: the kubelet's atomic `..data` swap must
    // reach tokex for reloads without a restart.
    let mut out = vec![Volume {
        name: CONFIG_VOLUME.to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: options.config_map.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if let Some(secret) = &options.credentials {
        out.push(Volume {
            name: CREDENTIALS_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(SECRET_MODE),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(audience) = &options.token_audience {
        out.push(Volume {
            name: TOKEN_VOLUME.to_string(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(SECRET_MODE),
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: TOKEN_PATH.to_string(),
                        audience: Some(audience.clone()),
                        expiration_seconds: Some(TOKEN_SECONDS),
                    }),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
    }
    if options.transparent {
        out.push(Volume {
            name: INIT_RUN_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_string()),
                size_limit: Some(Quantity("1Mi".to_string())),
            }),
            ..Default::default()
        });
    }
    out
}

/// The proxy variables of an app that sends its calls to tokex explicitly. Both
/// spellings: curl and some libraries read only the lowercase ones. `HTTPS_PROXY` stays
/// unset: tokex never tunnels.
pub fn proxy_env(proxy_port: u16) -> Vec<EnvVar> {
    let proxy = format!("http://127.0.0.1:{proxy_port}");
    let no_proxy = "localhost,127.0.0.1,::1,.svc,.cluster.local";
    [
        ("HTTP_PROXY", proxy.as_str()),
        ("http_proxy", proxy.as_str()),
        ("NO_PROXY", no_proxy),
        ("no_proxy", no_proxy),
    ]
    .into_iter()
    .map(|(name, value)| EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    })
    .collect()
}

/// The names of every volume [`volumes`] may add, for the collision check.
pub const VOLUME_NAMES: [&str; 4] = [
    CONFIG_VOLUME,
    CREDENTIALS_VOLUME,
    TOKEN_VOLUME,
    INIT_RUN_VOLUME,
];

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        read_only: Some(true),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    }
}

fn resources(r: &Resources) -> ResourceRequirements {
    let map = |cpu: &Option<Quantity>, memory: &Option<Quantity>| {
        let m: BTreeMap<String, Quantity> = [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect();
        (!m.is_empty()).then_some(m)
    };
    ResourceRequirements {
        requests: map(&r.cpu_request, &r.memory_request),
        limits: map(&r.cpu_limit, &r.memory_limit),
        ..Default::default()
    }
}
