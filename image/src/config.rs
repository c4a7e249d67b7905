//! The image configuration ocibuild writes: our own type rather than oci-spec's, because
//! oci-spec's lacks `Healthcheck`, `OnBuild` and `Shell` and keeps labels in `HashMap`s.
//!
//! Serialisation is deterministic: struct fields serialise in declaration order and every
//! map is a `BTreeMap`, so the same config always gives the same bytes and the same digest.
//! Field names follow the OCI image spec / Docker image spec v1.2 on the wire.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `PATH` Docker gives images built `FROM scratch` and RUN steps without one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An empty JSON object (`{}`), the value type of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The image configuration blob (`application/vnd.oci.image.config.v1+json` or
/// `application/vnd.docker.container.image.v1+json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Author (set by `MAINTAINER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU variant, e.g. `v8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The runtime defaults of containers made from the image.
    #[serde(default)]
    pub config: ContainerConfig,
    /// The layers' uncompressed digests, in order.
    pub rootfs: RootFs,
    /// One entry per Dockerfile instruction (and per base image step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
}

/// Runtime defaults (`config` object of the image configuration).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// User (and optionally group) the process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Ports exposed, as `port/proto` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    /// Environment, `KEY=value` entries in order of definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint argv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Volume mount points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Signal that stops the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Whether `Cmd`/`Entrypoint` are already escaped (Windows); kept when inherited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Health check (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// `ONBUILD` triggers (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Shell for shell-form commands (Docker extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// A health check (`HEALTHCHECK`); durations are in nanoseconds as in Docker's format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    /// Time between checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Time after which one check is considered hung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    /// Start-up grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    /// Time between checks during the start period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    /// Consecutive failures needed to report unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}

/// The `rootfs` object: layer diff IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `sha256:<hex>` of each uncompressed layer tar, bottom first.
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When the step ran, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction that made the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Author of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free-form comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True when the step added no layer.
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ImageConfig {
    /// A config for `FROM scratch` on the given platform. Like Docker (BuildKit), it starts
    /// with the default `PATH` so that later steps and the container find programs.
    pub fn scratch(os: &str, architecture: &str, variant: Option<&str>) -> ImageConfig {
        let mut config = ImageConfig {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.map(str::to_string),
            ..ImageConfig::default()
        };
        config.env_set("PATH", DEFAULT_PATH);
        config
    }

    /// A `FROM scratch` config for `platform` (see [`ImageConfig::scratch`]).
    pub fn scratch_for(platform: &crate::platform::Platform) -> ImageConfig {
        ImageConfig::scratch(
            &platform.os().to_string(),
            &platform.architecture().to_string(),
            platform.variant().as_deref(),
        )
    }

    /// The platform the config names, when it names an os and an architecture.
    pub fn platform(&self) -> Option<crate::platform::Platform> {
        let named = !self.os.is_empty() && !self.architecture.is_empty();
        named.then(|| {
            crate::platform::platform(&self.os, &self.architecture, self.variant.as_deref())
        })
    }

    /// Parses a config blob.
    pub fn from_json(bytes: &[u8]) -> serde_json::Result<ImageConfig> {
        serde_json::from_slice(bytes)
    }

    /// Serialises the config deterministically.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an image config always serialises")
    }

    /// The environment as ordered `(key, value)` pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .env
            .iter()
            .flatten()
            .map(|entry| match entry.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (entry.clone(), String::new()),
            })
            .collect()
    }

    /// The value of environment variable `key`, if set.
    pub fn env_get(&self, key: &str) -> Option<String> {
        self.env_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Sets `key=value`, replacing an existing entry in place or appending, as Docker does.
    pub fn env_set(&mut self, key: &str, value: &str) {
        let env = self.config.env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }

    /// Adds a history entry.
    pub fn push_history(&mut self, created: &str, created_by: &str, empty_layer: bool) {
        self.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by.to_string()),
            empty_layer,
            ..History::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_stable_key_order() {
        let mut c = ImageConfig::scratch("linux", "amd64", None);
        c.config.env = None;
        let mut labels = BTreeMap::new();
        labels.insert("z".to_string(), "1".to_string());
        labels.insert("a".to_string(), "2".to_string());
        c.config.labels = Some(labels);
        let json = String::from_utf8(c.to_json()).unwrap();
        assert_eq!(
            json,
            r#"{"architecture":"amd64","os":"linux","config":{"Labels":{"a":"2","z":"1"}},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        assert_eq!(c.to_json(), c.clone().to_json());
    }

    #[test]
    fn env_set_replaces_in_place_and_appends() {
        let mut c = ImageConfig::default();
        c.env_set("PATH", "/bin");
        c.env_set("A", "1");
        c.env_set("PATH", "/app/bin:/bin");
        assert_eq!(
            c.config.env.as_deref().unwrap(),
            ["PATH=/app/bin:/bin", "A=1"]
        );
        assert_eq!(c.env_get("A").as_deref(), Some("1"));
        assert_eq!(c.env_get("B"), None);
    }

    #[test]
    fn reads_docker_extensions_and_keeps_them() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":1000000000},"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"Cmd":null},"rootfs":{"type":"layers","diff_ids":["sha256:00"]},"history":[{"created_by":"x","empty_layer":true}]}"#;
        let c = ImageConfig::from_json(json).unwrap();
        assert_eq!(c.config.on_build.as_deref().unwrap(), ["RUN x"]);
        assert_eq!(c.config.shell.as_deref().unwrap(), ["/bin/bash", "-c"]);
        assert_eq!(
            c.config.healthcheck.as_ref().unwrap().interval,
            Some(1_000_000_000)
        );
        assert!(c.history[0].empty_layer);
        let again = ImageConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn deeply_nested_json_is_refused_by_serde_json_recursion_limit() {
        // A hostile registry's config: unknown fields are skipped, nested values too,
        // and serde_json stops at 128 levels instead of overflowing the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        for json in [
            format!(r#"{{"architecture":"amd64","os":"linux","x":{deep}}}"#),
            format!(r#"{{"config":{{"Labels":{{"a":{deep}}}}}}}"#),
            deep.clone(),
        ] {
            let err = ImageConfig::from_json(json.as_bytes()).unwrap_err();
            assert!(
                err.to_string().contains("recursion limit") || err.is_data(),
                "{err}"
            );
        }
        let ok = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"x":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(ImageConfig::from_json(ok.as_bytes()).is_ok());
    }
}
