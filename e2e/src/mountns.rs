//! Running a program as a pod sees its files: `unshare --mount` gives it a
//! private mount namespace, bind mounts put files over paths (resolv.conf,
//! volumes, service-account token), then the shell `exec`s the program. The
//! lookups, the pod runtime's CoreDNS and the bench's standalone CoreDNS all
//! start this way.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One bind mount: `source` (a host path) over `target` (in the namespace).
#[derive(Clone, Debug)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// Make `target` first (`mkdir -p`): a directory that may not exist.
    pub make_dir: bool,
}

impl Bind {
    /// Over an existing file or directory, read-write.
    pub fn file(source: impl Into<PathBuf>, target: &str) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            read_only: false,
            make_dir: false,
        }
    }

    /// Over a directory made if missing, as a volume is mounted.
    pub fn dir(source: impl Into<PathBuf>, target: &str, read_only: bool) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            read_only,
            make_dir: true,
        }
    }
}

/// The bind mounts, in order, of one program's namespace.
#[derive(Clone, Debug, Default)]
pub struct Unshare {
    binds: Vec<Bind>,
}

impl Unshare {
    pub fn new() -> Unshare {
        Unshare::default()
    }

    pub fn bind(mut self, b: Bind) -> Unshare {
        self.binds.push(b);
        self
    }

    pub fn binds(mut self, b: impl IntoIterator<Item = Bind>) -> Unshare {
        self.binds.extend(b);
        self
    }

    /// The shell script: every mount (stopping at the first that fails),
    /// then `exec "$@"`.
    pub fn script(&self) -> String {
        let mut s = String::from("set -e\n");
        for b in &self.binds {
            let t = shell_quote(&b.target);
            if b.make_dir {
                s.push_str(&format!("mkdir -p {t}\n"));
            }
            s.push_str(&format!(
                "mount --bind {} {t}\n",
                shell_quote(&b.source.to_string_lossy())
            ));
            if b.read_only {
                s.push_str(&format!("mount -o remount,bind,ro {t}\n"));
            }
        }
        s.push_str("exec \"$@\"\n");
        s
    }

    /// `unshare --mount --propagation private -- /bin/sh -c SCRIPT NAME PROGRAM`;
    /// the caller adds the program's arguments, environment and stdio.
    pub fn command(&self, program: &Path) -> Command {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "program".into());
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(self.script())
            .arg(name)
            .arg(program);
        cmd
    }
}

/// SIGKILL the process when the one that started it dies, even hard.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Single-quoted for /bin/sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_makes_directories_mounts_in_order_and_execs() {
        let u = Unshare::new()
            .bind(Bind::dir("/v/config", "/etc/coredns", true))
            .bind(Bind::file("/tmp/it's.conf", "/etc/resolv.conf"));
        assert_eq!(
            u.script(),
            "set -e\nmkdir -p '/etc/coredns'\nmount --bind '/v/config' '/etc/coredns'\n\
             mount -o remount,bind,ro '/etc/coredns'\n\
             mount --bind '/tmp/it'\\''s.conf' '/etc/resolv.conf'\nexec \"$@\"\n"
        );
    }
}
