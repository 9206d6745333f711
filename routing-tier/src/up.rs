//! `routing-tier up`: writes the configs, starts the demo app and the four components in
//! order (routing-api, then gorouter and tcp-router, then route-emitter), waits until the demo
//! app answers through gorouter and supervises: SIGINT/SIGTERM stop everything (routing-api
//! last) and exit 0; a component exiting on its own stops the rest and exits 1.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::UpOptions;
use crate::binaries::Binaries;
use crate::bus;
use crate::ports::Ports;
use crate::supervisor::{self, Supervised};
use crate::{configs, demo, probe, tls, Error};

/// How long each component gets to open its port.
const PORT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the demo app gets to answer through gorouter.
const DEMO_DEADLINE: Duration = Duration::from_secs(30);

/// Runs the tier until a signal (exit code 0) or a failure (1, after printing why).
pub async fn run(opts: UpOptions) -> Result<u8, Error> {
    let binaries = Binaries::find()?;
    let ports = match opts.port_base {
        Some(n) => Ports::from_base(n)?,
        None => Ports::default(),
    };
    let bus = bus::choose(opts.nats.as_deref(), opts.no_nats)
        .await
        .ok_or_else(|| Error::NatsUrl(opts.nats.clone().unwrap_or_default()))?;

    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| Error::io("cannot create the data dir", &opts.data_dir, e))?;
    let data_dir = std::fs::canonicalize(&opts.data_dir)
        .map_err(|e| Error::io("cannot resolve the data dir", &opts.data_dir, e))?;
    let routes_dir = data_dir.join("routes.d");
    let logs_dir = data_dir.join("logs");
    for d in [&routes_dir, &logs_dir] {
        std::fs::create_dir_all(d).map_err(|e| Error::io("cannot create", d, e))?;
    }
    let tier_tls = tls::load_or_generate(&data_dir.join("tls"))?;

    let write = |name: &str, text: String| -> Result<PathBuf, Error> {
        let path = data_dir.join(name);
        std::fs::write(&path, text).map_err(|e| Error::io("cannot write", &path, e))?;
        Ok(path)
    };
    let routing_api_yml = write(
        "routing-api.yml",
        configs::routing_api(&data_dir, &ports, &tier_tls)?,
    )?;
    let gorouter_yml = write(
        "gorouter.yml",
        configs::gorouter(&ports, &bus, &tier_tls.gorouter)?,
    )?;
    let tcp_router_yml = write("tcp-router.yml", configs::tcp_router(&ports)?)?;
    let emitter_yml = write(
        "route-emitter.yml",
        configs::route_emitter(&data_dir, &ports, &bus)?,
    )?;

    let demo_port = demo::start().await?;
    let demo_route = routes_dir.join("demo.yml");
    std::fs::write(&demo_route, configs::demo_route(demo_port)?)
        .map_err(|e| Error::io("cannot write", &demo_route, e))?;

    println!(
        "routing-tier: WARNING: the Routing API accepts UNAUTHENTICATED requests on 127.0.0.1:{} (auth_disabled: true)",
        ports.routing_api
    );
    println!("routing-tier: {}", bus.describe());
    println!(
        "routing-tier: configs, logs and data in {}",
        data_dir.display()
    );
    println!(
        "routing-tier: {} certificates in {}",
        if tier_tls.generated {
            "generated"
        } else {
            "reusing the"
        },
        tier_tls.dir.display()
    );

    let mut tier = Tier::new(&logs_dir)?;
    let path = |p: &Path| p.display().to_string();

    let step = async {
        tier.spawn(
            "routing-api",
            &binaries.routing_api,
            &[
                "-config".into(),
                path(&routing_api_yml),
                "-ip".into(),
                "127.0.0.1".into(),
            ],
        )?;
        tier.wait_port("routing-api", ports.routing_api).await?;
        tier.wait_port("routing-api", ports.routing_api_mtls)
            .await?;
        tier.spawn(
            "gorouter",
            &binaries.gorouter,
            &["-c".into(), path(&gorouter_yml)],
        )?;
        tier.spawn(
            "tcp-router",
            &binaries.tcp_router,
            &[format!("-config={}", path(&tcp_router_yml))],
        )?;
        tier.wait_port("gorouter", ports.gorouter_http).await?;
        tier.wait_port("tcp-router", ports.tcp_router_health)
            .await?;
        tier.spawn(
            "route-emitter",
            &binaries.route_emitter,
            &["-config".into(), path(&emitter_yml)],
        )?;
        tier.wait_demo(ports.gorouter_http).await
    };
    match step.await {
        Ok(()) => {}
        Err(Stop::Signal) => {
            tier.stop_all().await;
            return Ok(0);
        }
        Err(Stop::Exited(i, status)) => return Ok(tier.child_exited(i, status).await),
        Err(Stop::Failed(e)) => {
            eprintln!("routing-tier: {e}");
            tier.print_tails();
            tier.stop_all().await;
            return Ok(1);
        }
    }

    let pid = |name: &str| {
        tier.children
            .iter()
            .find(|c| c.name == name)
            .map_or(0, Supervised::pid)
    };
    let with_pid = |name: &str| format!("{name} (pid {})", pid(name));
    // One aligned column of names, whatever the pids' widths.
    let line = |label: &str, what: String| println!("  {label:<27}{what}");
    println!("routing tier up:");
    line(
        &with_pid("gorouter"),
        format!(
            "http://127.0.0.1:{}  https://127.0.0.1:{}  (/health 127.0.0.1:{}, /routes 127.0.0.1:{} router-status/router-status-pass)",
            ports.gorouter_http, ports.gorouter_https, ports.gorouter_status, ports.gorouter_routes
        ),
    );
    line(
        &with_pid("routing-api"),
        format!(
            "http://127.0.0.1:{}  (admin 127.0.0.1:{}, auth disabled)",
            ports.routing_api, ports.routing_api_admin
        ),
    );
    line(
        "routing-api mTLS",
        format!(
            "https://127.0.0.1:{}  (client cert {}, key {}, CA {})",
            ports.routing_api_mtls,
            tier_tls.routing_api_client_cert().display(),
            tier_tls.routing_api_client_key().display(),
            tier_tls.ca().display()
        ),
    );
    line(
        &with_pid("tcp-router"),
        format!(
            "health http://127.0.0.1:{}/health, TCP routes (router group default-tcp) on ports {}-{}",
            ports.tcp_router_health, ports.tcp_first, ports.tcp_last
        ),
    );
    line(
        &with_pid("route-emitter"),
        format!(
            "routes from {}/*.yml (route-registrar's `routes:` entries)",
            routes_dir.display()
        ),
    );
    line(
        "demo app",
        format!("http://127.0.0.1:{demo_port}, routed at demo.localhost"),
    );
    println!("routes.d: {}", routes_dir.display());
    println!("logs: {}", logs_dir.display());
    println!("Ctrl-C stops everything. Try:");
    println!(
        "curl --cacert {} --cert {} --key {} https://127.0.0.1:{}/routing/v1/router_groups",
        tier_tls.ca().display(),
        tier_tls.routing_api_client_cert().display(),
        tier_tls.routing_api_client_key().display(),
        ports.routing_api_mtls
    );
    println!(
        "curl -H 'Host: demo.localhost' http://127.0.0.1:{}/",
        ports.gorouter_http
    );

    loop {
        match tier.check() {
            Ok(()) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(Stop::Signal) => {
                tier.stop_all().await;
                return Ok(0);
            }
            Err(Stop::Exited(i, status)) => return Ok(tier.child_exited(i, status).await),
            Err(Stop::Failed(e)) => return Err(e),
        }
    }
}

/// Why a wait ended early.
enum Stop {
    Signal,
    Exited(usize, std::process::ExitStatus),
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Stop::Failed(e)
    }
}

/// The children in start order and whether SIGINT/SIGTERM arrived.
struct Tier {
    children: Vec<Supervised>,
    logs_dir: PathBuf,
    signalled: Arc<AtomicBool>,
}

impl Tier {
    fn new(logs_dir: &Path) -> Result<Self, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let signalled = Arc::new(AtomicBool::new(false));
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
        let flag = signalled.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        });
        Ok(Self {
            children: Vec::new(),
            logs_dir: logs_dir.to_path_buf(),
            signalled,
        })
    }

    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<(), Stop> {
        let log = self.logs_dir.join(format!("{name}.log"));
        self.children
            .push(Supervised::spawn(name, program, args, log)?);
        Ok(())
    }

    /// A signal, or the first child that has exited.
    fn check(&mut self) -> Result<(), Stop> {
        if self.signalled.load(Ordering::SeqCst) {
            return Err(Stop::Signal);
        }
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(status) = c.try_exit() {
                return Err(Stop::Exited(i, status));
            }
        }
        Ok(())
    }

    async fn wait_port(&mut self, name: &str, port: u16) -> Result<(), Stop> {
        let deadline = Instant::now() + PORT_DEADLINE;
        loop {
            self.check()?;
            if probe::port_open(port).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Stop::Failed(Error::PortTimeout {
                    name: name.to_string(),
                    port,
                    secs: PORT_DEADLINE.as_secs(),
                    log: self
                        .logs_dir
                        .join(format!("{name}.log"))
                        .display()
                        .to_string(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_demo(&mut self, port: u16) -> Result<(), Stop> {
        let deadline = Instant::now() + DEMO_DEADLINE;
        loop {
            self.check()?;
            if probe::answers_200(port, "demo.localhost").await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Stop::Failed(Error::DemoTimeout(DEMO_DEADLINE.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reports child `i`'s exit with its last log lines, stops the rest; exit code 1.
    async fn child_exited(&mut self, i: usize, status: std::process::ExitStatus) -> u8 {
        let c = &self.children[i];
        eprintln!(
            "routing-tier: {} exited ({}); last lines of {}:",
            c.name,
            supervisor::describe(status),
            c.log.display()
        );
        eprintln!("{}", c.log_tail(20));
        self.stop_all().await;
        1
    }

    fn print_tails(&self) {
        for c in &self.children {
            eprintln!("---- last lines of {} ----", c.log.display());
            eprintln!("{}", c.log_tail(20));
        }
    }

    /// SIGTERM to every child, routing-api (the first) last; SIGKILL after the grace period.
    async fn stop_all(&mut self) {
        println!("routing-tier: stopping");
        if self.children.len() > 1 {
            supervisor::stop(&mut self.children[1..]).await;
        }
        let first = self.children.len().min(1);
        supervisor::stop(&mut self.children[..first]).await;
    }
}
