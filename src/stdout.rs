//! Standard output of the command line: a line at a time, and a closed
//! pipe (`wendelin stat DB A | head -1`) ends the program quietly and
//! successfully, as the streaming commands (`log`, `fsdump`, `file cat`)
//! already do, instead of the panic `println!` raises.

use std::io::Write;

/// Write one line to stdout (see the module docs for a closed pipe).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        exit_on_write_error(&e);
    }
}

/// End the program after a failed write to stdout: quietly for a closed
/// pipe, with a message otherwise.
pub fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("wendelin: writing to stdout: {e}");
    std::process::exit(1);
}

/// `println!` for the command line: see [`line`].
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::stdout::line(format_args!($($t)*))
    };
}
