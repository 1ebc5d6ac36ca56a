//! The few Docker operations the group needs, through the `docker` CLI.
//!
//! Why the CLI and not a client crate: the simulation needs Docker on the
//! machine anyway (its scenarios `docker kill`, `pause` and `network
//! disconnect` containers), the CLI negotiates the API version with whatever
//! daemon is there (20.10 here, API 1.41), and it adds no crates to every
//! build of the controller for a backend that never runs in production.
//! Machine-readable output only: `docker inspect` JSON, `-q` ids.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

use crate::scaling::backend::BackendError;

/// Default time limit of a CLI call (`docker stop` gets its grace on top).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The `docker` CLI.
#[derive(Debug, Clone)]
pub struct Docker {
    bin: PathBuf,
}

/// One container, from `docker inspect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
    /// `/name`, as the daemon reports it.
    pub name: String,
    pub state: ContainerState,
    pub config: ContainerConfig,
    pub network_settings: NetworkSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// created, running, paused, restarting, removing, exited, dead.
    pub status: String,
    #[serde(default)]
    pub exit_code: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// The image reference the container was created from.
    pub image: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    #[serde(default)]
    pub networks: Option<HashMap<String, Endpoint>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    #[serde(rename = "IPAddress", default)]
    pub ip_address: String,
}

impl Container {
    pub fn name(&self) -> &str {
        self.name.trim_start_matches('/')
    }

    /// The container's address on `network`, if it is attached.
    pub fn ip(&self, network: &str) -> Option<IpAddr> {
        self.network_settings
            .networks
            .as_ref()?
            .get(network)?
            .ip_address
            .parse()
            .ok()
    }
}

/// What `docker run` needs to start one instance.
#[derive(Debug, Clone)]
pub struct RunSpec<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub network: &'a str,
    pub labels: &'a [(String, String)],
    /// Passed by name (`-e KEY`), the value through the CLI's environment,
    /// so that it is not in any process's arguments.
    pub env: &'a [(String, String)],
    /// Extra `docker run` options.
    pub options: &'a [String],
    /// Arguments after the image (the worker's flags).
    pub args: &'a [String],
    pub stop_timeout: Duration,
}

fn error(message: String) -> BackendError {
    BackendError::new("docker", message, true)
}

impl Docker {
    pub fn new(bin: impl Into<PathBuf>) -> Docker {
        Docker { bin: bin.into() }
    }

    /// Runs `docker ARGS`: whether it succeeded, its stdout and stderr.
    async fn exec(
        &self,
        args: Vec<OsString>,
        env: &[(String, String)],
        limit: Duration,
    ) -> Result<(bool, String, String), BackendError> {
        let what = args
            .iter()
            .take(2)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let child = Command::new(&self.bin)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                BackendError::new(
                    "docker",
                    format!("cannot run {}: {e}", self.bin.display()),
                    false,
                )
            })?;
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| error(format!("docker {what}: no answer within {limit:?}")))?
            .map_err(|e| error(format!("docker {what}: {e}")))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            format!(
                "docker {what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }

    /// Runs `docker ARGS`; stdout on success, stderr as the error.
    async fn call(
        &self,
        args: Vec<OsString>,
        env: &[(String, String)],
        limit: Duration,
    ) -> Result<String, BackendError> {
        match self.exec(args, env, limit).await? {
            (true, stdout, _) => Ok(stdout),
            (false, _, stderr) => Err(error(stderr)),
        }
    }

    /// Every container (running or not) carrying `label=value`.
    pub async fn list(&self, label: &str, value: &str) -> Result<Vec<Container>, BackendError> {
        let ids = self
            .call(
                vec![
                    "ps".into(),
                    "-aq".into(),
                    "--no-trunc".into(),
                    "--filter".into(),
                    format!("label={label}={value}").into(),
                ],
                &[],
                CALL_TIMEOUT,
            )
            .await?;
        let ids: Vec<OsString> = ids.split_whitespace().map(OsString::from).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<OsString> = vec!["inspect".into(), "--type".into(), "container".into()];
        args.extend(ids);
        let json = match self.exec(args, &[], CALL_TIMEOUT).await? {
            (true, json, _) => json,
            // A container removed between `ps` and `inspect`: stdout still
            // has all the others (and the group must not think them gone).
            (false, json, stderr)
                if stderr.contains("No such") && json.trim_start().starts_with('[') =>
            {
                json
            }
            (false, _, stderr) => return Err(error(stderr)),
        };
        serde_json::from_str(&json)
            .map_err(|e| error(format!("docker inspect: unexpected output: {e}")))
    }

    /// `docker run -d`: creates and starts a container; returns once started.
    pub async fn run(&self, spec: &RunSpec<'_>) -> Result<(), BackendError> {
        let mut args: Vec<OsString> = vec!["run".into(), "--detach".into()];
        let mut push = |k: &str, v: &str| {
            args.push(k.into());
            args.push(v.into());
        };
        push("--name", spec.name);
        push("--hostname", spec.name);
        push("--network", spec.network);
        push(
            "--stop-timeout",
            &spec.stop_timeout.as_secs().max(1).to_string(),
        );
        for (k, v) in spec.labels {
            push("--label", &format!("{k}={v}"));
        }
        for (k, _) in spec.env {
            push("--env", k);
        }
        args.extend(spec.options.iter().map(OsString::from));
        args.push(spec.image.into());
        args.extend(spec.args.iter().map(OsString::from));
        self.call(args, spec.env, CALL_TIMEOUT).await.map(drop)
    }

    /// `docker stop --time T`: SIGTERM, then SIGKILL after T.
    pub async fn stop(&self, name: &str, grace: Duration) -> Result<(), BackendError> {
        let secs = grace.as_secs().max(1);
        self.call(
            vec![
                "stop".into(),
                "--time".into(),
                secs.to_string().into(),
                name.into(),
            ],
            &[],
            CALL_TIMEOUT + Duration::from_secs(secs),
        )
        .await
        .map(drop)
    }

    /// `docker rm --force`: kills (even a paused container) and removes.
    pub async fn remove(&self, name: &str) -> Result<(), BackendError> {
        match self
            .call(
                vec!["rm".into(), "--force".into(), name.into()],
                &[],
                CALL_TIMEOUT,
            )
            .await
        {
            Err(e) if e.message.contains("No such container") => Ok(()),
            other => other.map(drop),
        }
    }

    /// The container's output (stdout and stderr, interleaved as docker kept them).
    pub async fn logs(&self, name: &str) -> Result<Vec<u8>, BackendError> {
        let out = Command::new(&self.bin)
            .args(["logs", name])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(CALL_TIMEOUT, out)
            .await
            .map_err(|_| error("docker logs: no answer".into()))?
            .map_err(|e| error(format!("docker logs: {e}")))?;
        let mut all = out.stdout;
        all.extend_from_slice(&out.stderr);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inspect_output() {
        let json = r#"[{"Name": "/g-1a2b", "State": {"Status": "running", "ExitCode": 0, "Paused": false},
            "Config": {"Image": "drove-worker:v1", "Labels": {"drove.group": "g"}},
            "NetworkSettings": {"Networks": {"net": {"IPAddress": "172.18.0.3"}}}},
            {"Name": "/g-3c4d", "State": {"Status": "exited", "ExitCode": 137},
            "Config": {"Image": "drove-worker:v1", "Labels": null},
            "NetworkSettings": {"Networks": {}}}]"#;
        let c: Vec<Container> = serde_json::from_str(json).unwrap();
        assert_eq!(c[0].name(), "g-1a2b");
        assert_eq!(c[0].ip("net"), Some("172.18.0.3".parse().unwrap()));
        assert_eq!(c[0].ip("other"), None);
        assert_eq!(
            (c[1].state.status.as_str(), c[1].state.exit_code),
            ("exited", 137)
        );
        assert_eq!(c[1].ip("net"), None);
    }
}
