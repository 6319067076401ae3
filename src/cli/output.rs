/*!
Writing to stdout and stderr without ever killing the run: a closed pipe (`up | head -1`) or a
full disk stops the output, not the migrations. The run goes on to the end, and its exit
code is the run's own.
*/

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Set while stdout carries a script (`--sql`): the human lines go to stderr.
static HUMAN_TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends the human lines ([`outln!`]) to stderr, keeping stdout for [`script`].
pub(crate) fn human_to_stderr() {
    HUMAN_TO_STDERR.store(true, Ordering::Relaxed);
}

/// Writes SQL to stdout (always stdout, unless it was found closed).
pub(crate) fn script(text: &str) {
    write_stdout(format_args!("{}", text.trim_end()));
}

/// Writes one line to stdout (stderr while stdout carries a script), unless it was found closed.
pub(crate) fn out(args: Arguments<'_>) {
    if HUMAN_TO_STDERR.load(Ordering::Relaxed) {
        return err(args);
    }
    write_stdout(args);
}

fn write_stdout(args: Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")).is_err() {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        log::warn!("stdout is closed: the run goes on without printing");
    }
}

/// Writes one line to stderr (errors ignored: there is nowhere left to say them).
pub(crate) fn err(args: Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_fmt(args).and_then(|()| stderr.write_all(b"\n"));
}

/// `println!` that survives a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::output::out(format_args!($($arg)*)) };
}

/// `eprintln!` that survives a closed stderr.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::output::err(format_args!($($arg)*)) };
}

pub(crate) use {errln, outln};
