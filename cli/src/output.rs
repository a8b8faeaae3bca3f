//! Standard output for people and pipes. `println!` panics when the reader
//! went away (`sluice dead-letters list | head -1`); a closed pipe is a
//! normal end for a command whose output nobody reads any more.

use std::io::Write;

/// Writes one line to standard output. A closed pipe ends the process
/// with status 0 (the reader has what it wanted); any other write error
/// ends it with status 1 and says why on standard error.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        end_on(e);
    }
}

/// Flushes what was written, with the same handling of a closed pipe.
pub fn flush() {
    if let Err(e) = std::io::stdout().lock().flush() {
        end_on(e);
    }
}

fn end_on(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("sluice: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// `println!` for the commands' output: see [`line()`].
macro_rules! outln {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}
