//! The `qunfa` command line: parses arguments and calls the library, nothing else.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use qunfa::app::{App, Settings};
use qunfa::db::{DatabaseUrl, Db};

#[derive(Debug, Parser)]
#[command(
    name = "qunfa",
    version,
    about = "群发: mass-messaging campaigns driven by enterprise chat webhooks"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Args)]
struct DatabaseArg {
    /// A SQLite file path (the default) or a postgres:// URL.
    #[arg(
        long = "database",
        env = "QUNFA_DATABASE_URL",
        default_value = "./qunfa.db"
    )]
    url: String,
}

impl DatabaseArg {
    fn parse(&self) -> anyhow::Result<DatabaseUrl> {
        Ok(DatabaseUrl::parse(&self.url)?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: webhooks, admin API, delivery workers (the default).
    Serve {
        /// The bot-rules directory.
        #[arg(long, env = "QUNFA_RULES", default_value = "./bot-rules")]
        rules: PathBuf,
        #[command(flatten)]
        database: DatabaseArg,
        /// The address to listen on.
        #[arg(long, env = "QUNFA_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// How long in-flight sends may take to finish after SIGTERM or Ctrl-C.
        #[arg(long, env = "QUNFA_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
        drain_timeout_secs: u64,
    },
    /// Validate a bot-rules directory; prints every problem as file:line:col: message.
    CheckRules {
        #[arg(default_value = "./bot-rules", env = "QUNFA_RULES")]
        dir: PathBuf,
    },
    /// Apply the embedded database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArg,
    },
    /// An interactive console to the running service, as the local operator.
    Shell {
        #[command(flatten)]
        database: DatabaseArg,
        /// The token file written by `qunfa serve` (default: beside its database).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The shell user id to speak as (matches `[[operator]] platform = "shell"`).
        #[arg(long = "as", default_value = "local")]
        user: String,
    },
}

/// See the note on the dependency in Cargo.toml.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or_else(|| {
        Cli::parse_from(["qunfa", "serve"])
            .command
            .unwrap_or(Command::CheckRules {
                dir: "./bot-rules".into(),
            })
    });
    match command {
        Command::Serve {
            rules,
            database,
            listen,
            drain_timeout_secs,
        } => {
            qunfa::telemetry::init_tracing();
            let app = App::build(Settings {
                rules_dir: rules,
                database: database.parse()?,
                listen,
                drain_timeout: Duration::from_secs(drain_timeout_secs),
            })
            .await?;
            let shutdown = CancellationToken::new();
            qunfa::shutdown::cancel_on_signal(shutdown.clone());
            app.run(shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckRules { dir } => {
            let report = qunfa::rules::check(&dir);
            for problem in &report.problems {
                println!("{problem}");
            }
            for warning in &report.warnings {
                println!("warning: {warning}");
            }
            if report.problems.is_empty() {
                println!("{}: rules are valid", dir.display());
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("{} problem(s) found", report.problems.len());
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Migrate { database } => {
            let url = database.parse()?;
            let db = Db::connect(&url).await?;
            let report = db.migrate().await?;
            db.close().await;
            println!(
                "{}: applied {} migration(s); schema version {}",
                url.redacted(),
                report.applied,
                report.version
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Shell {
            database,
            token_file,
            user,
        } => {
            let token_file = match token_file {
                Some(path) => path,
                None => qunfa::inbound::token_file_path(&database.parse()?),
            };
            qunfa::console::run(qunfa::console::ConsoleOptions { token_file, user }).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
