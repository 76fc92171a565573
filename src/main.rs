//! The `wsgate` command line: run the proxy, check a config, run an echo
//! server, or a self-contained demo. The only place `anyhow` is used.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tracing_subscriber::EnvFilter;

use wsgate::config::Config;
use wsgate::server::Server;
use wsgate::shutdown::Shutdown;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_target(false)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Ok(threads) = std::env::var("WORKER_THREADS") {
        let threads: usize = threads
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("WORKER_THREADS={threads:?} is not a positive number"))?;
        runtime.worker_threads(threads);
    }
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(&config).await,
            Command::Check { config } => check(&config),
            Command::Echo { listen } => echo(listen).await,
            Command::Demo { config } => demo(&config).await,
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
