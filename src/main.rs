//! The `suivi` command: `serve` runs the service, `simulate` sends a simulated programme to it,
//! `report` makes partners' reports from the downstream store, `credentials` manages who may
//! do what.
//! It parses the command line, loads and validates settings, starts logging, and hands over to
//! the library; it holds no logic of its own.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use suivi::config::{Settings, SettingsFlags};
use suivi::{app, auth, report, shutdown, simulate, telemetry};

/// suivi counts, for each partner's tracking campaign of a national online course, how many
/// people clicked, enrolled, started, completed each chapter and were certified, exactly and
/// live, from learner events sent over gRPC, HTTP (and Kafka).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: gRPC on 127.0.0.1:50051, HTTP on 127.0.0.1:8080, data in ./suivi-data
    /// unless configured otherwise. Settings come from a TOML file (--config), SUIVI_…
    /// environment variables and flags, in rising priority.
    Serve(Box<SettingsFlags>),
    /// Generate a realistic programme (the registry's partners, clicks, enrolments, chapters,
    /// certificates, reproducing the published figures) and send it to a running suivi.
    Simulate(simulate::SimulateArgs),
    /// Make a partner's report (or every partner's) for a period — a half-quarter such as
    /// 2021-Q1-1 or a date range — from the downstream store (the snapshot files of data_dir, or
    /// PostgreSQL when postgres_url is set), as printable HTML with charts, CSV or JSON, in French
    /// or English. Needs no running suivi.
    Report(Box<report::ReportArgs>),
    /// Manage the credentials file: add a credential (printing its token once), list them,
    /// revoke one. A running suivi reads the file again within a second.
    Credentials(auth::cli::CredentialsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("suivi: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(flags) => match Settings::load(&flags).and_then(auth::check_settings) {
            Ok(settings) => {
                telemetry::init_logging(settings.log_format);
                runtime.block_on(async {
                    let shutdown = shutdown::listen()?;
                    app::bind(settings).await?.run(shutdown).await
                })
            }
            Err(error) => {
                eprintln!("suivi: {error:#}");
                return ExitCode::from(2);
            }
        },
        Command::Simulate(args) => {
            telemetry::init_logging(suivi::config::LogFormat::Text);
            runtime.block_on(simulate::run(args))
        }
        Command::Credentials(args) => auth::cli::run(args, &mut std::io::stdout()),
        Command::Report(args) => {
            telemetry::init_logging(suivi::config::LogFormat::Text);
            runtime.block_on(report::run(*args))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("suivi: {error:#}");
            ExitCode::FAILURE
        }
    }
}
