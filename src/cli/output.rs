//! What the commands print and how they exit: one JSON object a line on stdout, the summary
//! last; exit 0 done, 1 failed, 2 settings or arguments wrong.

use std::process::ExitCode;

/// Settings (or arguments) that cannot work: said on stderr, exit code 2.
pub fn settings_error(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("lakebackup: {error}");
    ExitCode::from(2)
}

/// One action as a JSON line, as it happens: a long run never holds its actions in memory.
pub fn print_json_line(action: impl serde::Serialize) {
    println!("{}", serde_json::to_string(&action).unwrap_or_default());
}

/// The summary as the last JSON line, after the actions' lines.
pub fn print_last_line(summary: &impl serde::Serialize, succeeded: bool) -> ExitCode {
    print_json_line(summary);
    exit_code(succeeded)
}

pub fn exit_code(succeeded: bool) -> ExitCode {
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
