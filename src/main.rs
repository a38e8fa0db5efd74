//! The `headwater` command line: `serve`, `shield` and `check-config`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use headwater::config::{Config, DEFAULT_TOML};
use headwater::observe::{self, LogFormat};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "headwater",
    version,
    about = "Live-video origin server: RTMP in, HLS out"
)]
struct Cli {
    /// Log output format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the origin server.
    Serve {
        /// Configuration file; without it the embedded demo config (config/headwater.toml) is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also serve HTTPS (h1/h2) and HTTP/3 with a self-signed certificate for localhost, on
        /// `tls.listen` or 127.0.0.1:8443. Development only.
        #[arg(long)]
        dev_tls: bool,
    },
    /// Run as a shield: a caching HLS proxy in front of another origin.
    Shield {
        /// Upstream origin base URL (overrides `shield.upstream`), e.g. http://origin:8080.
        #[arg(long)]
        upstream: Option<String>,
        /// Address to serve on (overrides `shield.listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Configuration file ([shield] and [cache] sections); the embedded default otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (non-zero with the offending field on error).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => {
            Config::load(&file)
                .with_context(|| format!("{} is not a valid configuration", file.display()))?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Serve { config, dev_tls } => {
            let _log = observe::init_logging(cli.log_format);
            let mut config = load(config)?;
            if dev_tls {
                config.tls.self_signed = true;
                config
                    .tls
                    .listen
                    .get_or_insert(([127, 0, 0, 1], 8443).into());
            }
            runtime()?.block_on(serve(config))
        }
        Command::Shield {
            upstream,
            listen,
            config,
        } => {
            let _log = observe::init_logging(cli.log_format);
            let mut config = load(config)?;
            if let Some(upstream) = upstream {
                config.shield.upstream = upstream;
            }
            if let Some(listen) = listen {
                config.shield.listen = listen;
            }
            config.shield.validate().context("shield settings")?;
            runtime()?.block_on(shield(config))
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn load(path: Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::load(&path).with_context(|| format!("loading {}", path.display())),
        None => Config::from_toml(DEFAULT_TOML).context("embedded default config"),
    }
}

async fn shield(config: Config) -> anyhow::Result<()> {
    let metrics = observe::install_metrics().context("installing the metrics recorder")?;
    let shield = headwater::Shield::start(&config, Some(metrics))
        .await
        .context("starting the shield")?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    shield.shutdown().await;
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let metrics = observe::install_metrics().context("installing the metrics recorder")?;
    let server = headwater::Server::start(config, Some(metrics))
        .await
        .context("binding listeners")?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
