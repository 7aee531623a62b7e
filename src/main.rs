//! The `keygate` binary: parses the command line and hands over to the library.
//!
//! Exit codes: 0 ok; 1 runtime failure (a store of another layout included); 64 bad
//! configuration (nothing was bound); the management commands (`orgs`, `users`, `projects`,
//! `keys`, `migrate`, `reload`) exit as `cli` says (64 usage, 65 refused, 69 unreachable).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use keygate::cli::{self, KeysCommand, Manage, OrgsCommand, ProjectsCommand, Target, UsersCommand};
use keygate::config::Config;

/// mimalloc instead of glibc malloc: under load glibc's malloc/free/consolidate were a large
/// share of keygate's CPU profile (many small, short-lived allocations per request).
/// mimalloc's v2, not v3 (Cargo.toml): v3 over-allocates every aligned request above its small
/// sizes, and Rust asks for every allocation aligned.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bad configuration (EX_USAGE): reported before anything is bound.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "API-key authentication gateway for model-inference backends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: PathBuf,
    },
    /// Make a running keygate read its config file again (routes, upstreams, scopes, keys,
    /// headers, TLS certificates); exit 65 if it refused the file (nothing changed then).
    Reload {
        /// The admin listener of the running keygate (`kill -HUP <pid>` does the same, with the
        /// outcome in its log).
        #[arg(long, env = "KEYGATE_URL", default_value = "http://127.0.0.1:9090")]
        url: String,
    },
    /// Move the store to the layout this keygate reads (stop every replica first); safe to run
    /// again, e.g. after a crash.
    Migrate {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: PathBuf,
        /// Say what would be copied and deleted; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate a config file; report every problem; exit 64 if there are any.
    CheckConfig {
        #[arg(long, short, env = "KEYGATE_CONFIG")]
        config: PathBuf,
    },
    /// Organisations (the platform's operators).
    Orgs {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: OrgsCommand,
    },
    /// Users of an org: create, list, show, change role or status.
    Users {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Projects of an org and their members.
    Projects {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: ProjectsCommand,
    },
    /// API keys: create, list, show, rename, set scopes, revoke, activate, rotate, delete.
    Keys {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the demo upstream (a fixed 64-byte JSON answer) for demos and benchmarks.
    DemoUpstream {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Show what keygate forwarded in response headers (`x-demo-key-id`,
        /// `x-demo-received-bytes`); off for benchmarks, so every caller gets the same answer.
        #[arg(long)]
        echo: bool,
    },
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        match cli.command {
            Command::CheckConfig { config } => match load(&config) {
                Ok(c) => {
                    println!(
                        "{}: ok ({} listener(s), {} route(s))",
                        config.display(),
                        c.listeners.len(),
                        c.routes.iter().count()
                    );
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            Command::Serve { config: path } => {
                let config = match load(&path) {
                    Ok(c) => Arc::new(c),
                    Err(code) => return code,
                };
                keygate::telemetry::init(&config.log);
                let listeners = match keygate::Listeners::bind(&config) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot bind listeners");
                        return ExitCode::FAILURE;
                    }
                };
                let reload = keygate::Reload {
                    path,
                    on_sighup: true,
                };
                match keygate::run(config, listeners, Some(reload), shutdown_signal()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %keygate::telemetry::chain(&e), "keygate failed");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Migrate { config, dry_run } => {
                ExitCode::from(cli::migrate(&config, dry_run).await)
            }
            Command::Reload { url } => ExitCode::from(cli::reload(&url).await),
            Command::Orgs { target, command } => manage(target, Manage::Orgs(command)).await,
            Command::Users { target, command } => manage(target, Manage::Users(command)).await,
            Command::Projects { target, command } => {
                manage(target, Manage::Projects(command)).await
            }
            Command::Keys { target, command } => manage(target, Manage::Keys(command)).await,
            Command::DemoUpstream { listen, echo } => {
                let listener = match tokio::net::TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("error: cannot bind {listen}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                eprintln!("demo upstream on http://{listen}");
                match keygate::demo::serve(listener, echo).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    })
}

async fn manage(target: Target, command: Manage) -> ExitCode {
    ExitCode::from(cli::run(target, command).await)
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every command and sub-command says in its `--help` what it does.
    #[test]
    fn every_command_says_what_it_does() {
        fn walk(cmd: &clap::Command, path: &str, silent: &mut Vec<String>) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let path = format!("{path} {}", sub.get_name());
                if sub
                    .get_about()
                    .is_none_or(|a| a.to_string().trim().is_empty())
                {
                    silent.push(path.clone());
                }
                walk(sub, &path, silent);
            }
        }
        let mut silent = Vec::new();
        walk(&Cli::command(), "keygate", &mut silent);
        assert!(
            silent.is_empty(),
            "commands without a description: {silent:?}"
        );
        Cli::command().debug_assert();
    }
}
