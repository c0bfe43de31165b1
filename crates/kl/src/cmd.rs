//! One module per command.

pub mod deploy;
pub mod functions;
pub mod invoke;
pub mod logs;
pub mod server;
