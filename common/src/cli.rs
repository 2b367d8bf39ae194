//! Command-line flags every exporter shares, spelled as the Prometheus exporters spell them.
//!
//! Each exporter flattens [`WebArgs`], [`LogArgs`] and (when it has a config) [`ConfigArgs`] into
//! its own clap derive struct, then calls [`parse`], which adds one `--collector.<name>` /
//! `--no-collector.<name>` pair per collector (the names are only known at run time, so these
//! are added to the derived command rather than derived).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches};

/// `--web.*` and scrape timing flags.
#[derive(clap::Args, Debug, Clone)]
pub struct WebArgs {
    /// Addresses on which to expose metrics and the web interface (repeatable). `:PORT` means
    /// every interface. Defaults to the exporter's own port.
    #[arg(long = "web.listen-address", value_name = "ADDRESS")]
    pub listen_address: Vec<String>,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        default_value = "/metrics",
        value_name = "PATH"
    )]
    pub telemetry_path: String,

    /// Path to a web configuration file (exporter-toolkit format) enabling TLS and basic auth.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Maximum number of parallel scrape requests; beyond it, 503. 0 means no limit.
    #[arg(long = "web.max-requests", default_value_t = 40, value_name = "N")]
    pub max_requests: usize,

    /// Maximum number of simultaneous connections; beyond it new connections are closed (with a
    /// 503 on plain HTTP) until some end. 0 means no limit.
    #[arg(long = "web.max-connections", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: usize,

    /// Collection timeout when a scrape has no X-Prometheus-Scrape-Timeout-Seconds header.
    #[arg(long = "scrape.timeout", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub scrape_timeout: Duration,

    /// Subtracted from Prometheus's scrape timeout header to leave time for encoding and transfer.
    #[arg(long = "scrape.timeout-offset", default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub scrape_timeout_offset: Duration,
}

/// Logging format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Logfmt,
    Json,
}

/// Log level.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// `--log.*` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value_t = LogLevel::Info)]
    pub level: LogLevel,
    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value_t = LogFormat::Logfmt)]
    pub format: LogFormat,
}

/// `--config.*` flags, for exporters that have a configuration file.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Path to the exporter's configuration file.
    #[arg(long = "config.file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Validate the configuration file, print the verdict and exit (0 valid, 1 invalid).
    #[arg(long = "config.check")]
    pub check: bool,
}

impl ConfigArgs {
    /// Implements `--config.check` for an exporter whose configuration `load` reads: without
    /// the flag, `None` (go on); with it, the verdict is printed and the exit code returned
    /// (0 valid, 1 invalid or no `--config.file`).
    pub fn check<T, E: std::fmt::Display>(
        &self,
        load: impl FnOnce(&std::path::Path) -> Result<T, E>,
    ) -> Option<std::process::ExitCode> {
        if !self.check {
            return None;
        }
        let Some(path) = &self.file else {
            eprintln!("--config.check needs --config.file");
            return Some(std::process::ExitCode::FAILURE);
        };
        Some(match load(path) {
            Ok(_) => {
                println!("{}: configuration is valid", path.display());
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                std::process::ExitCode::FAILURE
            }
        })
    }
}

/// A collector's identity, declared once in its module (`pub const FLAG`): its name (the
/// `--collector.<name>` flag, the `collector` label and [`crate::Collector::name`]), its help
/// and whether it runs by default.
#[derive(Debug, Clone, Copy)]
pub struct CollectorFlag {
    pub name: &'static str,
    pub help: &'static str,
    pub default_enabled: bool,
}

/// Parses `args` into the exporter's flags `T` plus the list of enabled collectors.
pub fn try_parse_from<T, I, S>(
    collectors: &[CollectorFlag],
    args: I,
) -> Result<(T, Vec<&'static str>), clap::Error>
where
    T: clap::Parser,
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString> + Clone,
{
    let mut cmd = <T as clap::CommandFactory>::command();
    if !collectors.is_empty() {
        cmd = cmd.arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Disable every collector that is enabled by default; enable the wanted ones with --collector.<name>"),
        );
    }
    for c in collectors {
        let on = format!("collector.{}", c.name);
        let off = format!("no-collector.{}", c.name);
        let default = if c.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {} collector ({default} by default). {}",
                        c.name, c.help
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .help(format!("Disable the {} collector", c.name)),
            );
    }
    let matches = cmd.try_get_matches_from(args)?;
    let parsed = T::from_arg_matches(&matches)?;
    Ok((parsed, enabled_collectors(collectors, &matches)))
}

/// Like [`try_parse_from`] over the process arguments, exiting with clap's message on error.
pub fn parse<T: clap::Parser>(collectors: &[CollectorFlag]) -> (T, Vec<&'static str>) {
    match try_parse_from(collectors, std::env::args_os()) {
        Ok(v) => v,
        Err(e) => e.exit(),
    }
}

fn enabled_collectors(collectors: &[CollectorFlag], m: &ArgMatches) -> Vec<&'static str> {
    let no_defaults = !collectors.is_empty() && m.get_flag("collector.disable-defaults");
    collectors
        .iter()
        .filter(|c| {
            if m.get_flag(&format!("no-collector.{}", c.name)) {
                false
            } else if m.get_flag(&format!("collector.{}", c.name)) {
                true
            } else {
                c.default_enabled && !no_defaults
            }
        })
        .map(|c| c.name)
        .collect()
}

/// Parses a Prometheus-style duration: `1h30m`, `15s`, `500ms`, `1.5s`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit (ms, s, m, h, d, w)"))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("invalid number {num:?} in duration {s:?}"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let factor = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        total += value * factor;
        rest = tail;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Flags {
        #[command(flatten)]
        web: WebArgs,
        #[command(flatten)]
        log: LogArgs,
    }

    const COLLECTORS: &[CollectorFlag] = &[
        CollectorFlag {
            name: "a",
            help: "",
            default_enabled: true,
        },
        CollectorFlag {
            name: "b",
            help: "",
            default_enabled: false,
        },
    ];

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("15x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn collector_flags() {
        let (_, on): (Flags, _) = try_parse_from(COLLECTORS, ["x"]).unwrap();
        assert_eq!(on, vec!["a"]);
        let (_, on): (Flags, _) =
            try_parse_from(COLLECTORS, ["x", "--collector.b", "--no-collector.a"]).unwrap();
        assert_eq!(on, vec!["b"]);
        // The last of a pair wins.
        let (_, on): (Flags, _) =
            try_parse_from(COLLECTORS, ["x", "--no-collector.a", "--collector.a"]).unwrap();
        assert_eq!(on, vec!["a"]);
        let (_, on): (Flags, _) =
            try_parse_from(COLLECTORS, ["x", "--collector.disable-defaults"]).unwrap();
        assert!(on.is_empty());
        assert!(try_parse_from::<Flags, _, _>(COLLECTORS, ["x", "--collector.zzz"]).is_err());
    }

    #[test]
    fn web_flags() {
        let (f, _): (Flags, _) = try_parse_from(
            COLLECTORS,
            [
                "x",
                "--web.listen-address=127.0.0.1:1",
                "--web.listen-address",
                "[::1]:2",
                "--log.format=json",
            ],
        )
        .unwrap();
        assert_eq!(f.web.listen_address, vec!["127.0.0.1:1", "[::1]:2"]);
        assert_eq!(f.web.telemetry_path, "/metrics");
        assert_eq!(f.log.format, LogFormat::Json);
    }
}
