//! A process a test runs: a built binary of the workspace (found with [`binary`]) or
//! `nats-server`, with stdin closed and stdout and stderr both going to one log file, usually in
//! the test's [`TempDir`](crate::util::TempDir).
//!
//! [`ChildProcess`] owns the [`Child`], its pid, the log file's path, the config text the process
//! was started with and, once seen, its exit status. The wrappers of the binaries under test
//! ([`Gorouter`](crate::Gorouter), [`RoutingApi`](crate::routing_api::RoutingApi),
//! [`Locket`](crate::routing_api::Locket), [`TcpRouter`](crate::tcp_router::TcpRouter),
//! [`RouteEmitter`](crate::route_emitter::RouteEmitter)) and [`NatsServer`](crate::NatsServer)
//! build the command line and the config; a `ChildProcess` runs it:
//!
//! - the output so far ([`ChildProcess::output`]), the exit status without waiting
//!   ([`ChildProcess::try_exit`]) or within a deadline ([`ChildProcess::wait_exit`], which panics
//!   with the output), signals, `/proc/<pid>/status` memory readings;
//! - on drop it kills the process (unless it has exited) and reaps it, then, when the test is
//!   panicking, prints the config and the output, framed as [`PanicDump`] says, so a failing
//!   test shows what the process was told and what it said.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::util::{poll, proc_status_kib};

/// Where a workspace binary is: `$<NAME>_BIN` (`-` as `_`, e.g. `$ROUTING_API_BIN`), else next
/// to the test executable's directory (tests run from `<target>/debug/deps/`, the binary is
/// `<target>/debug/<name>`), else `$CARGO_TARGET_DIR/debug`, else `<workspace>/target/debug`.
pub fn binary(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Ok(p) = std::env::var(&var) {
        return p.into();
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(debug_dir) = exe.parent().and_then(Path::parent) {
            candidates.push(debug_dir.join(name));
        }
    }
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("debug").join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("debug")
            .join(name),
    );
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the {name} binary was not found (looked at {candidates:?}; ${var} overrides): build it \
         with `cargo build --workspace` or run the tests with `cargo test --workspace`"
    );
}

/// What a [`ChildProcess`] prints when it is dropped while the test panics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PanicDump {
    /// The config, then the output:
    /// `---- <name> (pid <pid>) config ----`, the config text, `---- <name> output ----`, the
    /// output, `---- end of <name> output ----`. The default.
    ConfigAndOutput,
    /// The output alone: `----- <title> log <log path> -----`, the output,
    /// `----- end of <name> log -----`.
    Log { title: String },
    /// Nothing.
    Silent,
}

/// A running (or exited) child process of the test; see the module docs. Killed and reaped on
/// drop.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    pid: u32,
    log_path: PathBuf,
    config_text: String,
    exit: Option<ExitStatus>,
    dump: PanicDump,
}

impl ChildProcess {
    /// Runs `cmd` (program, arguments and environment set by the caller) with stdin from
    /// `/dev/null` and stdout and stderr into a new file at `log_path`. `name` names the process
    /// in messages (`gorouter`); `config_text` is what the panic dump shows as its config.
    /// Panics if the log file cannot be created or the program cannot be run.
    pub fn spawn(
        name: &str,
        cmd: Command,
        log_path: impl Into<PathBuf>,
        config_text: impl Into<String>,
    ) -> Self {
        Self::try_spawn(name, cmd, log_path, config_text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`spawn`](Self::spawn), returning what went wrong instead of panicking.
    pub fn try_spawn(
        name: &str,
        mut cmd: Command,
        log_path: impl Into<PathBuf>,
        config_text: impl Into<String>,
    ) -> Result<Self, String> {
        let log_path = log_path.into();
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create the {name} log {}: {e}", log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot clone the {name} log handle: {e}"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", Path::new(cmd.get_program()).display()))?;
        Ok(Self {
            name: name.to_string(),
            pid: child.id(),
            child,
            log_path,
            config_text: config_text.into(),
            exit: None,
            dump: PanicDump::ConfigAndOutput,
        })
    }

    /// Sets what is printed when dropped during a panic (default [`PanicDump::ConfigAndOutput`]).
    pub fn with_panic_dump(mut self, dump: PanicDump) -> Self {
        self.dump = dump;
        self
    }

    /// The name given at spawn (`gorouter`, `routing-api`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The file holding stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The config text given at spawn.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The address the process printed after `prefix` on a line of its own (e.g. `listening
    /// on 127.0.0.1:1234`), waiting up to 10 s for it; panics with the output otherwise.
    pub async fn printed_addr(&self, prefix: &str) -> std::net::SocketAddr {
        crate::util::eventually(
            &format!("{} to print `{prefix}<address>`", self.name),
            Duration::from_secs(10),
            || {
                let output = self.output();
                async move {
                    output
                        .lines()
                        .find_map(|l| l.strip_prefix(prefix))
                        .and_then(|a| a.trim().parse::<std::net::SocketAddr>().ok())
                }
            },
        )
        .await
    }

    /// The exit status if the process has exited (it is reaped then, and kept).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// Waits for the process to exit, panicking (with its output) after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let interval = Duration::from_millis(10);
        match poll(timeout, interval, || std::future::ready(self.try_exit())).await {
            Some(st) => st,
            None => panic!(
                "{} (pid {}) did not exit within {timeout:?}; its output:\n{}",
                self.name,
                self.pid,
                self.output()
            ),
        }
    }

    /// Waits for the process to exit by itself (e.g. on a bad config): its exit status and
    /// output. Panics (with the output) if it still runs after `timeout`.
    pub async fn run_to_exit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let status = self.wait_exit(timeout).await;
        (status, self.output())
    }

    /// Sends `sig` (e.g. `libc::SIGUSR1`). An error if the process was already reaped (its
    /// exit status is known: the pid may belong to another process by now) or kill(2) fails.
    pub fn try_signal(&self, sig: i32) -> std::io::Result<()> {
        if self.exit.is_some() {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        let pid = libc::pid_t::try_from(self.pid)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped (no exit status seen, and
        // only this type waits on it); kill has no memory-safety preconditions.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Sends `sig` unless the process has been seen to exit; failures are ignored.
    pub fn signal(&self, sig: i32) {
        let _ = self.try_signal(sig);
    }

    /// SIGKILL (unless the process has exited) and waits until it is gone: its exit status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            let _ = self.child.kill();
        }
        if let Ok(st) = self.child.wait() {
            self.exit = Some(st);
        }
        self.exit
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`); panics if it cannot be read.
    pub fn memory_kib(&self, field: &str) -> u64 {
        proc_status_kib(self.pid, field)
            .unwrap_or_else(|| panic!("cannot read {field} of pid {}", self.pid))
    }

    /// The text [`Drop`] prints during a panic (see [`PanicDump`]); `None` when silent.
    pub fn panic_dump(&self) -> Option<String> {
        let name = &self.name;
        match &self.dump {
            PanicDump::ConfigAndOutput => Some(format!(
                "---- {name} (pid {}) config ----\n{}\n---- {name} output ----\n{}\n---- end of {name} output ----",
                self.pid,
                self.config_text,
                self.output()
            )),
            PanicDump::Log { title } => Some(format!(
                "----- {title} log {} -----\n{}\n----- end of {name} log -----",
                self.log_path.display(),
                self.output()
            )),
            PanicDump::Silent => None,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            if let Some(text) = self.panic_dump() {
                eprintln!("{text}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, dir: &crate::util::TempDir) -> ChildProcess {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]);
        ChildProcess::spawn("sh", cmd, dir.path().join("sh.log"), "config: x")
    }

    #[tokio::test]
    async fn captures_output_and_exit_status() {
        let dir = crate::util::TempDir::new("it-process");
        let mut p = sh("echo out; echo err >&2; exit 3", &dir);
        let (status, output) = p.run_to_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(3));
        assert!(
            output.contains("out\n") && output.contains("err\n"),
            "{output}"
        );
        assert_eq!(p.try_exit(), Some(status));
        // Reaped: signalling is refused rather than aimed at a pid that may be reused.
        assert!(p.try_signal(libc::SIGTERM).is_err());
        p.signal(libc::SIGTERM);
    }

    #[tokio::test]
    async fn signals_and_kill() {
        let dir = crate::util::TempDir::new("it-process");
        let mut p = sh(
            "trap 'exit 7' TERM; echo ready; while :; do sleep 0.01; done",
            &dir,
        );
        assert!(p.try_exit().is_none());
        assert!(p.memory_kib("VmRSS") > 0);
        crate::util::eventually("the trap to be set", Duration::from_secs(10), || {
            std::future::ready(p.output().contains("ready").then_some(()))
        })
        .await;
        p.signal(libc::SIGTERM);
        let status = p.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(7));

        let mut q = sh("sleep 30", &dir);
        let st = q.kill().expect("killed");
        assert!(!st.success());
        assert_eq!(q.try_exit(), Some(st));
    }

    #[test]
    fn panic_dumps() {
        let dir = crate::util::TempDir::new("it-process");
        let mut cmd = Command::new("/bin/true");
        cmd.arg("x");
        let p = ChildProcess::spawn("gorouter", cmd, dir.path().join("gorouter.out"), "port: 1");
        let pid = p.pid();
        let text = p.panic_dump().expect("dump");
        assert!(
            text.starts_with(&format!(
                "---- gorouter (pid {pid}) config ----\nport: 1\n---- gorouter output ----\n"
            )),
            "{text}"
        );
        assert!(
            text.ends_with("\n---- end of gorouter output ----"),
            "{text}"
        );
        let p = p.with_panic_dump(PanicDump::Log {
            title: "locket".into(),
        });
        let text = p.panic_dump().expect("dump");
        assert!(
            text.starts_with(&format!(
                "----- locket log {} -----\n",
                p.log_path().display()
            )),
            "{text}"
        );
        assert!(
            text.ends_with("\n----- end of gorouter log -----"),
            "{text}"
        );
        assert_eq!(p.with_panic_dump(PanicDump::Silent).panic_dump(), None);
    }

    #[test]
    fn spawn_errors_name_the_program() {
        let dir = crate::util::TempDir::new("it-process");
        let cmd = Command::new("/nonexistent/it-binary");
        let err = ChildProcess::try_spawn("x", cmd, dir.path().join("x.log"), "").unwrap_err();
        assert!(
            err.starts_with("cannot run /nonexistent/it-binary: "),
            "{err}"
        );
    }
}
