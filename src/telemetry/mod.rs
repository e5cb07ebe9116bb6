//! Logging and metrics. Logs: human-readable text by default, JSON lines for
//! log shippers, on stderr so that stdout stays clean for command output.
//! Metrics: see [`metrics`].

pub mod metrics;

use clap::ValueEnum;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The level of the one access-log line each call writes (`--access-log-level`);
/// `off` writes none, for servers at full load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AccessLogLevel {
    Off,
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl AccessLogLevel {
    /// The tracing level of access lines; `None`: none are written.
    pub fn level(self) -> Option<tracing::Level> {
        match self {
            AccessLogLevel::Off => None,
            AccessLogLevel::Error => Some(tracing::Level::ERROR),
            AccessLogLevel::Warn => Some(tracing::Level::WARN),
            AccessLogLevel::Info => Some(tracing::Level::INFO),
            AccessLogLevel::Debug => Some(tracing::Level::DEBUG),
        }
    }
}

pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person watching a terminal: escape codes in a
        // log file or a collector are noise, and formatting them costs CPU
        // on every call's span.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))
}
