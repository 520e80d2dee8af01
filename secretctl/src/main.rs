//! `secretctl`: the operator's CLI. All logic lives in the `secretctl` library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `secretctl ... | head` must end quietly when the pipe closes, as a
    // shell tool does, not panic in `println!`. Rust ignores SIGPIPE by
    // default; the default action is what a CLI wants. Sockets are safe:
    // the standard library sends with MSG_NOSIGNAL.
    // SAFETY: signal() with a valid signal number and SIG_DFL, before any
    // thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = secretctl::Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("secretctl: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(secretctl::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            if e.downcast_ref::<secretctl::UsageError>().is_some() {
                std::process::ExitCode::from(secretctl::USAGE_EXIT_STATUS)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}
