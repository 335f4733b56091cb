//! The command line's parts, for the `lakebackup` binary only (the library never sees them):
//! the arguments clap parses, each command's runner, the JSON-lines output, and the progress line.

pub mod args;
pub mod commands;
pub mod jobs;
pub mod output;
pub mod poison;
pub mod progress_line;
pub mod serving;
