//! Ways the host calls into guests: one module per trigger type.

pub mod amqp;
pub mod http;
