//! Capabilities guests import, one module each: the module owns its WIT
//! bindings, its long-lived state and the `Host` trait implementation.

pub mod database;
pub mod guest_output;
pub mod messaging;
pub mod outbound_http;
pub mod variables;
