//! Turning a container into a host command line. Each process runs as
//!
//! ```text
//! ip netns exec <pod-netns> unshare --mount --uts --propagation private -- \
//!     sh -c '<bind mounts>; hostname <pod>; cd <workingDir>; exec setpriv ... -- "$@"' sh <argv>
//! ```
//!
//! so it gets the pod's network, a private mount namespace (volumes at their mountPaths, the pod's
//! /etc/hosts) and the pod name as hostname, with no `unsafe` in the agent. Probes and hooks of
//! type exec use the same line, so they see what the container sees.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use tokio::process::Command;

use crate::cmd::sh_quote;
use crate::config::Images;
use crate::volumes::VolumePaths;

/// Everything that is the same for all processes of one pod.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// `namespace_name`, for logs.
    pub key: String,
    pub netns: String,
    pub hostname: String,
    pub hosts_file: PathBuf,
    pub volumes: VolumePaths,
    /// terminationGracePeriodSeconds, used when a probe or hook kills a container.
    pub grace: i64,
}

/// One process to start inside the pod: the container's mounts and user with `argv`.
#[derive(Debug, Clone)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, String, bool)>,
    user: Option<(i64, i64, Vec<i64>)>,
    workdir: Option<String>,
}

impl Launch {
    /// Resolves the container's mounts and user; `argv` is filled in by the caller.
    pub fn for_container(spec: &PodSpec, c: &Container, volumes: &VolumePaths) -> Result<Self> {
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(src) = volumes.get(&m.name) else { bail!("volumeMount {:?}: no such volume", m.name) };
            let src = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => src.join(sub),
                None => src.clone(),
            };
            mounts.push((src, m.mount_path.clone(), m.read_only.unwrap_or(false)));
        }
        let psc = spec.security_context.as_ref();
        let csc = c.security_context.as_ref();
        let uid = csc.and_then(|s| s.run_as_user).or(psc.and_then(|s| s.run_as_user));
        let gid = csc.and_then(|s| s.run_as_group).or(psc.and_then(|s| s.run_as_group)).unwrap_or(0);
        let mut groups: Vec<i64> = psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default();
        groups.extend(psc.and_then(|s| s.fs_group));
        let user = uid.filter(|u| *u != 0).map(|u| (u, gid, groups));
        Ok(Self { argv: Vec::new(), env: Vec::new(), mounts, user, workdir: c.working_dir.clone() })
    }

    /// The full host command for this process in `pod`.
    pub fn command(&self, pod: &PodContext) -> Command {
        let mut script = String::from("set -e\n");
        for (src, dst, ro) in &self.mounts {
            let (src_q, dst_q) = (sh_quote(&src.to_string_lossy()), sh_quote(dst));
            // A file (a subPath of a file) needs a file to mount over; a directory a directory.
            // Missing mount points are created on the host file system (see README).
            if src.is_file() {
                script.push_str(&format!("mkdir -p \"$(dirname {dst_q})\"; [ -e {dst_q} ] || : > {dst_q}\n"));
            } else {
                script.push_str(&format!("mkdir -p {dst_q}\n"));
            }
            script.push_str(&format!("mount --bind {src_q} {dst_q}\n"));
            if *ro {
                script.push_str(&format!("mount -o remount,bind,ro {dst_q}\n"));
            }
        }
        script.push_str(&format!("mount --bind {} /etc/hosts\n", sh_quote(&pod.hosts_file.to_string_lossy())));
        script.push_str(&format!("hostname {}\n", sh_quote(&pod.hostname)));
        // Like an image without WORKDIR, a container starts in / unless workingDir says otherwise.
        let dir = self.workdir.as_deref().unwrap_or("/");
        script.push_str(&format!("mkdir -p {0}; cd {0}; export PWD={0}\n", sh_quote(dir)));
        script.push_str("exec ");
        if let Some((uid, gid, groups)) = &self.user {
            // A non-root uid loses every capability on the switch (no ambient caps are set).
            let groups = if groups.is_empty() {
                "--clear-groups".to_string()
            } else {
                format!("--groups={}", groups.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
            };
            script.push_str(&format!("setpriv --reuid={uid} --regid={gid} {groups} -- "));
        }
        script.push_str("\"$@\"\n");

        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &pod.netns, "unshare", "--mount", "--uts", "--propagation", "private", "--"]);
        cmd.args(["sh", "-c", &script, "sh"]).args(&self.argv);
        cmd.env_clear();
        // The host PATH, so that images without a mapping find their command as on the host.
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
        let home = if self.user.is_some() { "/" } else { "/root" };
        cmd.env("PATH", path).env("HOME", home).env("HOSTNAME", &pod.hostname);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.current_dir("/").kill_on_drop(false);
        cmd
    }
}

/// The argv of a container: image mapping (`images.yaml`) plus `command`/`args`, already expanded.
pub fn container_argv(images: &Images, image: &str, command: &[String], args: &[String]) -> Result<Vec<String>> {
    let mut argv: Vec<String> = command.to_vec();
    match images.binary(image) {
        Some(bin) => {
            let bin_s = bin.to_string_lossy().into_owned();
            if argv.is_empty() {
                argv.push(bin_s);
            } else if replaces_entrypoint(&argv[0], bin) {
                argv[0] = bin_s;
            }
        }
        None if argv.is_empty() => {
            bail!("image {image:?} has no entry in images.yaml and the container sets no command")
        }
        None => {}
    }
    argv.extend(args.iter().cloned());
    Ok(argv)
}

/// A mapped image's command runs the mapped binary when it names that binary or names something
/// the host does not have (`/usr/local/bin/mesh-proxy` inside the real image).
fn replaces_entrypoint(cmd0: &str, bin: &Path) -> bool {
    let same_name = Path::new(cmd0).file_name() == bin.file_name();
    same_name || !exists_on_host(cmd0)
}

fn exists_on_host(cmd0: &str) -> bool {
    if cmd0.contains('/') {
        return Path::new(cmd0).exists();
    }
    std::env::var("PATH").unwrap_or_default().split(':').any(|d| Path::new(d).join(cmd0).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_image_without_command_is_an_error() {
        assert!(container_argv(&Images::default(), "nginx", &[], &[]).is_err());
        let argv = container_argv(&Images::default(), "python:3", &["python3".into()], &["-V".into()]).unwrap();
        assert_eq!(argv, ["python3", "-V"]);
    }
}
