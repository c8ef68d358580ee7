//! `kvstore-bench`: the load generator. Flags and exit codes are documented
//! in `kvstore::bench::options`; the work happens in `kvstore::bench`.
//!
//! Exit status: 0 after a completed run (errors, if any, are in the report),
//! 1 when the run could not be made, 2 for invalid flags.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use kvstore::bench::{self, BenchArgs};

const EXIT_RUN_FAILED: u8 = 1;
/// As clap exits on a malformed flag.
const EXIT_INVALID_FLAGS: u8 = 2;

fn main() -> ExitCode {
    // clap exits with status 2 on invalid flags; so does an unusable file.
    let options = match BenchArgs::parse().into_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("kvstore-bench: {error}");
            return ExitCode::from(EXIT_INVALID_FLAGS);
        }
    };
    let report = match bench::run(&options) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("kvstore-bench: {error}");
            return ExitCode::from(EXIT_RUN_FAILED);
        }
    };
    let mut stdout = io::stdout().lock();
    if let Err(error) = report.write_to(&mut stdout).and_then(|()| stdout.flush()) {
        eprintln!("kvstore-bench: cannot write the report: {error}");
        return ExitCode::from(EXIT_RUN_FAILED);
    }
    ExitCode::SUCCESS
}
