//! Entry point; see the library crate for everything else.
use log_pattern_exporter::{config, replay, run, Command, Flags, COLLECTORS};

/// jemalloc, whose freed memory a pod churn leaves in whole pages that `common::alloc::trim`
/// gives back (see `common::alloc`).
#[global_allocator]
static ALLOCATOR: common::alloc::Jemalloc = common::alloc::Jemalloc;

fn main() -> std::process::ExitCode {
    let (flags, enabled) = common::cli::parse::<Flags>(COLLECTORS);
    common::logging::init(&flags.log);
    if let Some(Command::Replay {
        config_file,
        max_line_bytes,
        files,
    }) = &flags.command
    {
        return match replay::replay(config_file, files, *max_line_bytes) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::CheckRules {
        config_file,
        tenant,
        paths,
    }) = &flags.command
    {
        let limits = tenant.limits(flags.config_dir_max_files);
        return std::process::ExitCode::from(log_pattern_exporter::check_rules(
            config_file.as_deref(),
            &limits,
            paths,
        ));
    }
    if let Some(Command::ImportLokiRules {
        file,
        rules_out,
        prometheus_out,
        config_file,
        label_map,
    }) = &flags.command
    {
        let config = config_file.as_deref();
        let import = log_pattern_exporter::import::run;
        return match import(file, rules_out, prometheus_out, config, label_map) {
            Ok(import) => {
                for line in &import.report {
                    eprintln!("{line}");
                }
                if import.skipped > 0 {
                    eprintln!(
                        "{} rule(s) not translated; the others are written",
                        import.skipped
                    );
                    std::process::ExitCode::from(2)
                } else {
                    std::process::ExitCode::SUCCESS
                }
            }
            Err(err) => {
                eprintln!("error: {err}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let load_and_warn = |path: &std::path::Path| {
        config::load(path).inspect(|c| {
            for w in config::warnings(c) {
                eprintln!("{}: warning: {w}", path.display());
            }
        })
    };
    if let Some(code) = flags.config.check(load_and_warn) {
        return code;
    }
    common::block_on_main(run(flags, enabled))
}
