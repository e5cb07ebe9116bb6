//! Subcommands other than `serve`.

pub mod token;
