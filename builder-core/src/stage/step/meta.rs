//! Metadata steps (ARG, ENV, LABEL, USER, EXPOSE, VOLUME, STOPSIGNAL, ENTRYPOINT, CMD,
//! SHELL, MAINTAINER, HEALTHCHECK, ONBUILD): they edit the image config (ARG: the stage's
//! variables) and make no layer; their key covers the instruction and the config they
//! leave.

use super::{KeyFields, Layering, Step};
use crate::config::{Empty, HealthConfig};
use crate::engine::StageOptions;
use crate::error::Result;
use crate::stage::StageRun;
use ocibuild_dockerfile::ir::{ConfigEdit, KeyValue};
use ocibuild_dockerfile::parser::{Command, Healthcheck, Instruction};
use ocibuild_image::config::ImageConfig;

impl Step for ConfigEdit {
    fn kind(&self) -> &'static str {
        "metadata"
    }

    fn layering(&self, _: &StageOptions) -> Layering {
        Layering::Config
    }

    fn prepare(&self, stage: &mut StageRun<'_, '_>, ins: &Instruction) -> Result<()> {
        apply_edit(stage, ins, self.clone())
    }

    async fn key_fields(
        &self,
        stage: &mut StageRun<'_, '_>,
        ins: &Instruction,
    ) -> Result<KeyFields> {
        Ok(key_fields(ins, &stage.image.config))
    }

    /// Never called: a metadata step makes no layer.
    async fn execute(self, _: &mut StageRun<'_, '_>, _: &Instruction) -> Result<()> {
        Ok(())
    }
}

/// The key fields of metadata step `ins` that left the image config `config`: the
/// instruction as written, the container config as JSON and the author.
fn key_fields(ins: &Instruction, config: &ImageConfig) -> KeyFields {
    let json = serde_json::to_string(&config.config).unwrap_or_default();
    vec![
        ("instruction", KeyValue::Text(ins.original.clone())),
        ("config", KeyValue::Text(json)),
        (
            "author",
            KeyValue::Text(config.author.clone().unwrap_or_default()),
        ),
    ]
}

/// Applies a metadata instruction to the image config (ARG: to the stage's ARGs).
fn apply_edit(stage: &mut StageRun<'_, '_>, ins: &Instruction, edit: ConfigEdit) -> Result<()> {
    let config = &mut stage.image.config.config;
    match edit {
        ConfigEdit::Arg(decls) => {
            for (name, value) in decls {
                stage.stages.used_args.insert(name.clone());
                stage.args.insert(name, value);
            }
        }
        ConfigEdit::Env(pairs) => {
            for (k, v) in pairs {
                stage.image.config.env_set(&k, &v);
            }
        }
        ConfigEdit::Label(pairs) => config
            .labels
            .get_or_insert_with(Default::default)
            .extend(pairs),
        ConfigEdit::User(user) => config.user = Some(user),
        ConfigEdit::Expose(ports) => {
            let exposed = config.exposed_ports.get_or_insert_with(Default::default);
            exposed.extend(ports.into_iter().map(|p| (p, Empty {})));
        }
        ConfigEdit::Volume(paths) => {
            let volumes = config.volumes.get_or_insert_with(Default::default);
            volumes.extend(paths.into_iter().map(|v| (v, Empty {})));
        }
        ConfigEdit::StopSignal(sig) => config.stop_signal = Some(sig),
        ConfigEdit::Entrypoint(argv) => {
            config.entrypoint = Some(argv);
            if !stage.cmd_set {
                config.cmd = None;
            }
        }
        ConfigEdit::Cmd(argv) => {
            config.cmd = Some(argv);
            stage.cmd_set = true;
        }
        ConfigEdit::Shell(shell) => config.shell = Some(shell),
        ConfigEdit::Maintainer(name) => stage.image.config.author = Some(name),
        ConfigEdit::Healthcheck(check) => {
            let health = healthcheck(&check).map_err(|m| stage.step_err(ins, m))?;
            stage.image.config.config.healthcheck = Some(health);
        }
        ConfigEdit::Onbuild(trigger) => config.on_build.get_or_insert_with(Vec::new).push(trigger),
    }
    Ok(())
}

/// The image config form of HEALTHCHECK: `["NONE"]`, `["CMD", ...]` or
/// `["CMD-SHELL", cmd]`, durations in nanoseconds (0 = default, omitted).
fn healthcheck(check: &Healthcheck) -> std::result::Result<HealthConfig, String> {
    let Healthcheck::Check {
        command,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    } = check
    else {
        return Ok(HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        });
    };
    let test = match command {
        Command::Exec(args) => std::iter::once("CMD".to_string())
            .chain(args.iter().cloned())
            .collect(),
        Command::Shell(text) => vec!["CMD-SHELL".to_string(), text.clone()],
    };
    let retries = health_retries(retries)?;
    Ok(HealthConfig {
        test: Some(test),
        interval: health_duration("interval", interval)?,
        timeout: health_duration("timeout", timeout)?,
        start_period: health_duration("start-period", start_period)?,
        start_interval: health_duration("start-interval", start_interval)?,
        retries,
    })
}

/// HEALTHCHECK `--retries`: a whole number of at least 0; 0 means "default" and is left
/// out.
fn health_retries(retries: &Option<String>) -> std::result::Result<Option<i64>, String> {
    let Some(r) = retries else { return Ok(None) };
    match r.parse::<i64>() {
        Ok(n) if n >= 0 => Ok((n != 0).then_some(n)),
        _ => Err(format!(
            "--retries={r}: expected a whole number of at least 0"
        )),
    }
}

/// A HEALTHCHECK duration flag in nanoseconds; 0 means "default" and is left out.
fn health_duration(flag: &str, value: &Option<String>) -> std::result::Result<Option<i64>, String> {
    let Some(text) = value else { return Ok(None) };
    let nanos = parse_duration(text).ok_or_else(|| {
        format!("--{flag}={text}: expected a duration such as 30s, 1m30s or 500ms")
    })?;
    if nanos != 0 && nanos < 1_000_000 {
        return Err(format!("--{flag}={text}: must be at least 1ms"));
    }
    Ok((nanos != 0).then_some(nanos))
}

/// Parses a Go-style duration (`300ms`, `1.5h`, `2h45m`) into nanoseconds.
fn parse_duration(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    (total <= i64::MAX as f64).then_some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of a metadata step is the one the engine built field by field before the
    /// stage loop, so existing caches stay valid.
    #[test]
    fn metadata_keys_match_the_keys_before_the_stage_loop() {
        use crate::cache::StepKey;
        let parsed = ocibuild_dockerfile::parse(
            "FROM scratch\nLABEL a=1\n",
            std::path::Path::new("Dockerfile"),
        )
        .unwrap();
        let ins = &parsed.instructions[1];
        let mut config = ImageConfig::scratch("linux", "amd64", None);
        config.author = Some("me".into());
        config.config.user = Some("app".into());
        let old = StepKey::after("p", "metadata")
            .field("instruction", &ins.original)
            .field(
                "config",
                serde_json::to_vec(&config.config).unwrap_or_default(),
            )
            .field("author", config.author.as_deref().unwrap_or(""))
            .finish();
        let fields = key_fields(ins, &config);
        assert_eq!(super::super::step_key("p", "metadata", &fields), old);
        config.config.user = None;
        let fields = key_fields(ins, &config);
        assert_ne!(super::super::step_key("p", "metadata", &fields), old);
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("5d"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn healthcheck_forms_become_docker_config() {
        use ocibuild_dockerfile::parser::Healthcheck as H;
        assert_eq!(healthcheck(&H::None).unwrap().test.unwrap(), ["NONE"]);
        let check = H::Check {
            command: Command::Shell("curl -f localhost".into()),
            interval: Some("5m".into()),
            timeout: Some("3s".into()),
            start_period: None,
            start_interval: Some("0s".into()),
            retries: Some("3".into()),
        };
        let h = healthcheck(&check).unwrap();
        assert_eq!(h.test.clone().unwrap(), ["CMD-SHELL", "curl -f localhost"]);
        assert_eq!(
            (
                h.interval,
                h.timeout,
                h.start_period,
                h.start_interval,
                h.retries
            ),
            (
                Some(300_000_000_000),
                Some(3_000_000_000),
                None,
                None,
                Some(3)
            )
        );
        let bad = H::Check {
            command: Command::Exec(vec!["x".into()]),
            interval: Some("1us".into()),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        };
        assert!(healthcheck(&bad).unwrap_err().contains("1ms"));
    }
}
