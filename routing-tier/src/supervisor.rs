//! The children: each component runs with stdin from /dev/null and stdout and stderr into
//! `<data dir>/logs/<name>.log`; killed (SIGKILL) and reaped on drop. Stopping sends SIGTERM
//! and SIGKILLs after 5 s.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running component.
#[derive(Debug)]
pub struct Supervised {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Supervised {
    /// Starts `program args` with its output into `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Self, Error> {
        let out = std::fs::File::create(&log).map_err(|e| Error::io("cannot create", &log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("cannot open", &log, e))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                name: name.to_string(),
                path: program.display().to_string(),
                source,
            })?;
        Ok(Self {
            name: name.to_string(),
            log,
            child,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Sends `sig` unless it has exited.
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_exit().is_none() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) on our own, not yet reaped child.
                unsafe {
                    libc::kill(pid, sig);
                }
            }
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGTERM to all of `children` at once, then waits up to [`STOP_GRACE`] and SIGKILLs the rest.
pub async fn stop(children: &mut [Supervised]) {
    for c in children.iter_mut() {
        c.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && children.iter_mut().any(|c| c.try_exit().is_none()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for c in children.iter_mut() {
        if c.try_exit().is_none() {
            c.signal(libc::SIGKILL);
            let _ = c.child.wait();
        }
    }
}

/// The last `n` lines of the file at `path` (empty when unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Describes an exit status as `exit status 1` or `signal 9`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_terms_then_kills_and_tail_reads_the_log() {
        let dir = std::env::temp_dir().join(format!("routing-tier-sup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let sh = Path::new("/bin/sh");
        let args = |s: &str| vec!["-c".to_string(), s.to_string()];
        let mut children = vec![
            Supervised::spawn(
                "quits",
                sh,
                &args("echo a; echo b; echo c; exec sleep 30"),
                dir.join("q.log"),
            )
            .expect("spawn"),
            Supervised::spawn(
                "stubborn",
                sh,
                &args("trap '' TERM; sleep 30 & wait; sleep 30"),
                dir.join("s.log"),
            )
            .expect("spawn"),
        ];
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(children[0].log_tail(2), "b\nc");
        let started = Instant::now();
        stop(&mut children).await;
        // Killed after the grace, not waited out (the stubborn child runs 60 s): a generous
        // bound between the two.
        assert!(started.elapsed() < STOP_GRACE + Duration::from_secs(20));
        let s0 = children[0].try_exit().expect("exited");
        assert_eq!(describe(s0), "signal 15");
        let s1 = children[1].try_exit().expect("killed");
        assert_eq!(describe(s1), "signal 9");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
