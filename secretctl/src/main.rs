//! `secretctl`: the operator's CLI. All logic lives in the `secretctl` library.

use std::io::Write;

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
    let argv: Vec<String> = std::env::args().collect();
    let cli = match secretctl::parse(argv.clone()) {
        Ok(cli) => cli,
        Err(exit) => return print_exit(&exit),
    };
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
        Err(e) => match e.downcast_ref::<secretctl::UsageError>() {
            Some(u) => print_exit(&secretctl::usage::flag_error_for(
                &secretctl::cli_command(),
                &argv[1..],
                &u.message,
            )),
            None => {
                eprintln!("{e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}

fn print_exit(exit: &secretctl::usage::Exit) -> std::process::ExitCode {
    let _ = std::io::stdout().write_all(exit.stdout.as_bytes());
    let _ = std::io::stderr().write_all(exit.stderr.as_bytes());
    std::process::ExitCode::from(exit.status)
}
