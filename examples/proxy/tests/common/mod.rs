//! Starting and stopping the proxy binary in a test: a `.env` in a temporary directory, the
//! binary on a free loopback port, `/health` polled until it answers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub mod forward_proxy;
pub mod raw;

/// The client token the test `.env` files accept.
pub const TOKEN: &str = "sk-proxy-test-token";

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The running binary; killed when dropped.
pub struct Proxy {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Proxy {
    /// Starts the binary in `dir` with `.env` there; waits until `/health` answers.
    pub async fn start(dir: &Path, env_file: &str) -> Proxy {
        Proxy::start_logging(dir, env_file, None).await
    }

    /// Like [`start`](Self::start); with `log`, the log (stdout) goes to that file at the
    /// LOG_LEVEL of `env_file` (`warn` otherwise).
    pub async fn start_logging(dir: &Path, env_file: &str, log: Option<&Path>) -> Proxy {
        Proxy::start_with(dir, env_file, log, None).await
    }

    /// Like [`start_logging`](Self::start_logging) with a log file, and stderr (where a panic
    /// message goes) into the same file.
    pub async fn start_capturing(dir: &Path, env_file: &str, output: &Path) -> Proxy {
        Proxy::spawn(dir, env_file, Some(output), None, true).await
    }

    /// Like [`start_logging`](Self::start_logging); with `umask` (such as `"022"`), the binary
    /// runs under that umask (through `sh`, which sets it and `exec`s the binary).
    pub async fn start_with(
        dir: &Path,
        env_file: &str,
        log: Option<&Path>,
        umask: Option<&str>,
    ) -> Proxy {
        Proxy::spawn(dir, env_file, log, umask, false).await
    }

    async fn spawn(
        dir: &Path,
        env_file: &str,
        log: Option<&Path>,
        umask: Option<&str>,
        capture_stderr: bool,
    ) -> Proxy {
        std::fs::write(dir.join(".env"), env_file).unwrap();
        let port = free_port();
        let binary = env!("CARGO_BIN_EXE_gemini-balance-proxy");
        let mut command = match umask {
            Some(mask) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("umask {mask} && exec \"$0\""), binary]);
                sh
            }
            None => Command::new(binary),
        };
        command
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string());
        command.stderr(Stdio::inherit());
        match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                if capture_stderr {
                    command.stderr(file.try_clone().unwrap());
                } else {
                    command.stderr(Stdio::inherit());
                }
                command.stdout(file);
            }
            None => {
                command
                    .env("LOG_LEVEL", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit());
            }
        }
        let mut child = command.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = support::client_builder().build().unwrap();
        for _ in 0..400 {
            if let Ok(res) = client.get(format!("{url}/health")).send().await {
                if res.status() == 200 {
                    return Proxy { child, url };
                }
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("the proxy exited at startup with {exit}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the proxy did not start");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then wait: the graceful path that flushes the store.
    pub fn stop(mut self) {
        self.sigterm();
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the proxy exited with {exit}");
    }

    /// SIGKILL (`kill -9`), and wait for the process to end: a crash, nothing flushed.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    /// The exit status once the process has ended, or `None` if it is still running after
    /// `limit`.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return Some(exit);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary in a directory holding `env_file` as `.env` and expects it to refuse to
/// start; returns what it wrote to stderr.
pub fn startup_error(env_file: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), env_file).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
        .current_dir(dir.path())
        .env("HOST", "127.0.0.1")
        .env("PORT", free_port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A guard, not a measurement: a proxy that started anyway would otherwise run forever.
    for _ in 0..1200 {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(!exit.success(), "the proxy exited with {exit}");
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return stderr;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the proxy started although its settings are invalid");
}
