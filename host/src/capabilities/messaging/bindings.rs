//! Generated bindings for `trellis:messaging@0.1.0` (`wit/messaging.wit`):
//! the `publisher` import guests call and the `handler` export the AMQP
//! trigger calls.

wasmtime::component::bindgen!({
    path: "../wit/messaging.wit",
    world: "trellis:messaging/amqp-handler",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use exports::trellis::messaging::handler;
pub use trellis::messaging::publisher;
pub use trellis::messaging::types::{Delivery, Disposition, Error, Message};
