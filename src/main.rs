//! The `wsgate` command line: run the proxy, check a config, run an echo
//! server, a self-contained demo, or a load benchmark. The only place
//! `anyhow` is used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use wsgate::config::Config;
use wsgate::server::Server;
use wsgate::shutdown::Shutdown;

/// The process allocator: jemalloc, with a background thread that hands
/// freed pages back to the kernel within a second (`dirty_decay_ms:1000,
/// muzzy_decay_ms:0`, set in `.cargo/config.toml`).
///
/// The reason is memory per idle session after a reconnect storm. When
/// 10 000 sessions open within a second, their handshake buffers are freed
/// once they upgrade, but the long-lived sessions sit among the freed pages.
/// glibc's malloc keeps those pages: RSS stayed at 12-14.5 KiB per session
/// for the whole hold (`RAMP=1s benches/compare/hold.sh`), against 2.9 KiB
/// when the same sessions open over 10 s. mimalloc settled at 5-10 KiB, and
/// jemalloc with its default decay (which only purges while allocating) at
/// 11.6 KiB. With these settings it is back to 2.9 KiB two seconds after the
/// storm. CPU per relayed message and per new session did not change
/// measurably.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A WebSocket reverse proxy for the edge.
#[derive(Debug, Parser)]
#[command(name = "wsgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit (non-zero, naming the field and line, if it is wrong).
    Check {
        /// The YAML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a WebSocket echo server.
    Echo {
        /// Address to listen on.
        #[arg(long, short, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
    },
    /// Run the proxy on a config together with an echo server at its first
    /// backend's first server, and show one message going through.
    Demo {
        /// The YAML config file.
        #[arg(long, short, default_value = "config/wsgate.yaml")]
        config: PathBuf,
    },
    /// Load-test any WebSocket server or proxy: echo round trips, idle
    /// connections, or connection churn. Exits non-zero if any error occurred.
    Bench(Box<BenchArgs>),
}

/// What the connections of `wsgate bench` do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchMode {
    /// Send messages and verify every echo byte for byte.
    Echo,
    /// Open the connections, hold them for --duration, then ping each.
    Idle,
    /// Connect, upgrade, one echo, close: back to back in every slot.
    Churn,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The WebSocket URL to load: ws://HOST[:PORT]/PATH or wss://…
    url: String,
    /// What the connections do.
    #[arg(long, value_enum, default_value_t = BenchMode::Echo)]
    mode: BenchMode,
    /// Number of connections (churn: connection slots).
    #[arg(long, short = 'c', default_value_t = 10)]
    connections: usize,
    /// Message payload size: bytes, or with a unit (4KiB, 1MiB, 1MB).
    #[arg(long, default_value = "64", value_parser = parse_size_arg)]
    size: usize,
    /// Send text messages (default: binary).
    #[arg(long)]
    text: bool,
    /// Closed loop: messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Open loop: messages per second over all connections, sent at fixed
    /// intended times; latency counts from the intended time. Overrides
    /// --inflight.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to measure (idle: how long to hold the connections).
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    duration: Duration,
    /// Time from the start before counting begins.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    warmup: Duration,
    /// Spread the opening of the connections over this time.
    #[arg(long, default_value = "1s", value_parser = parse_duration_arg)]
    ramp: Duration,
    /// Limit of every wait: connect, handshake, echoes after the end, close.
    #[arg(long, default_value = "5s", value_parser = parse_duration_arg)]
    timeout: Duration,
    /// Worker threads, each with its own single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print one JSON object with all results on stdout, and no progress.
    #[arg(long)]
    json: bool,
    /// Source addresses to spread the connections over: a range such as
    /// 127.0.0.1-127.0.0.254, or a count N for N addresses from 127.0.0.1.
    #[arg(long, value_name = "RANGE|COUNT")]
    source_ips: Option<String>,
    /// wss: accept any server certificate.
    #[arg(long)]
    insecure: bool,
    /// wss: trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

fn parse_size_arg(text: &str) -> Result<usize, String> {
    let bytes = wsgate::config::units::parse_size(text).map_err(|e| e.to_string())?;
    usize::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

/// A duration as in the config (`10s`, `500ms`), or a bare `0`.
fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    wsgate::config::units::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    match start(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The message alone (with its causes), never a backtrace: these
            // are operator errors such as a wrong config.
            eprintln!("wsgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(cli: Cli) -> Result<()> {
    wsgate::logging::init();
    // The benchmark builds its own runtimes, one per thread.
    let command = match cli.command {
        Command::Bench(args) => return bench(*args),
        command => command,
    };
    let threads = match std::env::var("WORKER_THREADS") {
        Ok(threads) => Some(
            threads
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .with_context(|| format!("WORKER_THREADS={threads:?} is not a positive number"))?,
        ),
        Err(_) => None,
    };
    // One worker needs none of the work-stealing scheduler's cross-thread
    // queues, atomics and wake-ups: a current-thread runtime does the same
    // work with fewer instructions per relayed message.
    let mut runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            Command::Run { config } => run(&config).await,
            Command::Check { config } => check(&config),
            Command::Echo { listen } => echo(listen).await,
            Command::Demo { config } => demo(&config).await,
            Command::Bench(_) => unreachable!("bench runs without this runtime"),
        }
    })
}

/// Loads and validates a config, the TLS material included.
fn load(path: &Path) -> Result<Config> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (index, listener) in config.listeners.iter().enumerate() {
        if let Some(tls) = &listener.tls {
            wsgate::server::tls::acceptor(tls)
                .with_context(|| format!("{}: listeners[{index}].tls", path.display()))?;
        }
    }
    Ok(config)
}

fn check(path: &Path) -> Result<()> {
    let config = load(path)?;
    println!(
        "{}: ok ({} listeners, {} routes, {} backends)",
        path.display(),
        config.listeners.len(),
        config.routes.len(),
        config.backends.len()
    );
    Ok(())
}

/// Triggers `shutdown` on SIGINT or SIGTERM; a second signal exits at once.
fn stop_on_signal(shutdown: Shutdown) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; draining (signal again to exit now)");
        shutdown.trigger();
        wait_for_signal().await;
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(path: &Path) -> Result<()> {
    let config = load(path)?;
    let server = Server::bind(config).await?;
    for addr in server.local_addrs() {
        tracing::info!(%addr, "listening");
    }
    let shutdown = Shutdown::new();
    stop_on_signal(shutdown.clone());
    server.run(shutdown).await;
    Ok(())
}

async fn echo(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "echo server listening");
    let shutdown = Shutdown::new();
    stop_on_signal(shutdown.clone());
    wsgate::echo::serve(listener, shutdown).await;
    Ok(())
}

async fn demo(path: &Path) -> Result<()> {
    let config = load(path)?;
    let Some(backend) = config.backends.first() else {
        bail!("the config has no backend to run the echo server for");
    };
    let echo_url = &backend.servers[0].url;
    let echo_addr = format!("{}:{}", echo_url.host, echo_url.port);
    let echo_listener = TcpListener::bind(&echo_addr)
        .await
        .with_context(|| format!("cannot start the demo echo server on {echo_addr}"))?;
    let route = config.routes[0].path_prefix.clone();
    let plain = config
        .listeners
        .iter()
        .find(|l| l.tls.is_none())
        .map(|l| l.bind);
    let server = Server::bind(config).await?;
    let shutdown = Shutdown::new();
    stop_on_signal(shutdown.clone());
    tokio::spawn(wsgate::echo::serve(echo_listener, shutdown.clone()));
    let addrs = server.local_addrs();
    let proxy = tokio::spawn(server.run(shutdown.clone()));

    if let Some(bind) = plain {
        let url = format!(
            "ws://{}{}",
            addrs
                .iter()
                .find(|a| a.port() == bind.port())
                .unwrap_or(&bind),
            route
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .with_context(|| format!("demo client could not connect to {url}"))?;
        ws.send(Message::text("hello through wsgate")).await?;
        let reply = ws.next().await.context("no reply")??;
        ws.close(None).await?;
        println!(
            "\nwsgate demo: echo server on {echo_addr}, proxy on {}",
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("  sent     \"hello through wsgate\" to {url}");
        println!("  received {reply}");
        println!("\nTry it yourself, e.g.:  python3 -m websockets {url}");
        println!("Press Ctrl-C to stop.\n");
    }
    proxy.await?;
    Ok(())
}

fn bench(args: BenchArgs) -> Result<()> {
    use wsgate::bench::{Mode, Options};
    let opts = Options {
        url: args.url,
        mode: match args.mode {
            BenchMode::Echo => Mode::Echo,
            BenchMode::Idle => Mode::Idle,
            BenchMode::Churn => Mode::Churn,
        },
        connections: args.connections,
        size: args.size,
        text: args.text,
        inflight: args.inflight,
        rate: args.rate,
        duration: args.duration,
        warmup: args.warmup,
        ramp: args.ramp,
        timeout: args.timeout,
        threads: args.threads,
        source_ips: args.source_ips,
        insecure: args.insecure,
        ca: args.ca,
        progress: !args.json,
    };
    let report = wsgate::bench::run(&opts).context("bench")?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    match &report.failure {
        Some(why) => bail!("bench failed: {why}"),
        None => Ok(()),
    }
}
