//! Entry point; see the library crate for everything else.
#![forbid(unsafe_code)]
use libvirt_exporter::{run, Flags, COLLECTORS};

fn main() -> std::process::ExitCode {
    // A scrape builds megabytes of text on several threads: at most 2 arenas, each keeping
    // freed memory of its own (glibc makes up to 8 per core).
    common::alloc::tune(Some(2));
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(libvirt_exporter::events_helper::HELPER_ARG) {
        return libvirt_exporter::events_helper::helper_main(&args.next().unwrap_or_default());
    }
    let (flags, enabled) = common::cli::parse::<Flags>(COLLECTORS);
    common::logging::init(&flags.log);
    common::block_on_main(run(flags, enabled))
}
