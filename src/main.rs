//! The `rtc-broker` binary: `serve` (default) and `check-config`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rtc_broker::config::Settings;
use rtc_broker::startup::{Application, StartupError};
use rtc_broker::tokens::SigningKeys;
use rtc_broker::{shutdown, telemetry};

/// Exit status for a configuration that cannot be served.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser)]
#[command(
    name = "rtc-broker",
    version,
    about = "RTC token, session, room and recording broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and WebSocket requests (the default).
    Serve,
    /// Print the effective configuration, secrets redacted, and exit.
    CheckConfig,
    /// Run a failover drill against brokers behind Sentinel (exit 0: nothing
    /// acknowledged lost, 1: something was, 2: could not run).
    Drill(rtc_broker::drill::DrillArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The drill is a client of running brokers: no broker settings needed.
    let check_only = match cli.command.unwrap_or(Command::Serve) {
        Command::Drill(args) => return rtc_broker::drill::run(args),
        Command::CheckConfig => true,
        Command::Serve => false,
    };
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        return check_config(&settings);
    }
    match serve(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            let config_error = e
                .downcast_ref::<StartupError>()
                .is_some_and(StartupError::is_configuration);
            ExitCode::from(if config_error { EXIT_CONFIG } else { 1 })
        }
    }
}

fn check_config(settings: &Settings) -> ExitCode {
    if let Err(e) = SigningKeys::from_settings(&settings.tokens) {
        eprintln!("{e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    print!("{}", settings.redacted_toml());
    ExitCode::SUCCESS
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    telemetry::init(&settings.log, settings.run_env);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(shutdown::signal()).await?;
        Ok(())
    })
}
