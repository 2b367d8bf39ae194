//! Entry point; see the library crate for everything else.
#![forbid(unsafe_code)]
use libvirt_exporter::{run, Flags, COLLECTORS};

fn main() -> std::process::ExitCode {
    let (flags, enabled) = common::cli::parse::<Flags>(COLLECTORS);
    common::logging::init(&flags.log);
    common::block_on_main(run(flags, enabled))
}
