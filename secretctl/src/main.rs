//! `secretctl`: the operator's CLI. All logic lives in the `secretctl` library.

use std::io::Write;

fn main() -> std::process::ExitCode {
    end_quietly_on_closed_stdout();
    // `env::args` panics on an argument that is not UTF-8.
    let argv: Vec<String> = match std::env::args_os()
        .enumerate()
        .map(|(i, a)| a.into_string().map_err(|_| i))
        .collect()
    {
        Ok(argv) => argv,
        Err(i) => {
            eprintln!("secretctl: argument {i} is not valid UTF-8");
            return std::process::ExitCode::from(secretctl::usage::USAGE_EXIT_STATUS);
        }
    };
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

/// `secretctl ... | head` must end quietly when the pipe closes, as a shell
/// tool does (by SIGPIPE), not panic in `println!`. SIGPIPE itself stays
/// ignored, as Rust sets it: HTTP/2 writes to a member use `writev`, which
/// raises SIGPIPE on a socket the member closed, and that must be an
/// error, not death. So only a failed write to stdout on a closed pipe
/// ends the process, the way the signal would.
fn end_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            // SAFETY: restores the default action and raises the signal
            // in this thread; the process ends as `head`'s writers do.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
        }
        default(info);
    }));
}

fn print_exit(exit: &secretctl::usage::Exit) -> std::process::ExitCode {
    let _ = std::io::stdout().write_all(exit.stdout.as_bytes());
    let _ = std::io::stderr().write_all(exit.stderr.as_bytes());
    std::process::ExitCode::from(exit.status)
}
