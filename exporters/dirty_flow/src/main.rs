//! Entry point; see the library crate for everything else.
use dirty_flow_exporter::{config, run, Flags, COLLECTORS};

fn main() -> std::process::ExitCode {
    let (flags, enabled) = common::cli::parse::<Flags>(COLLECTORS);
    common::logging::init(&flags.log);
    if let Some(code) = flags.config.check(config::load) {
        return code;
    }
    common::block_on_main(run(flags, enabled))
}
