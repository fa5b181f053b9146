//! Generated bindings for `trellis:messaging@0.1.0` (`wit/messaging.wit`):
//! the `publisher` import guests call and the `handler` export the AMQP
//! trigger calls.

wasmtime::component::bindgen!({
    path: "../wit/messaging.wit",
    world: "trellis:messaging/amqp-handler",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::exports::trellis::messaging::handler;
pub use self::trellis::messaging::publisher;
pub use self::trellis::messaging::types::{Delivery, Disposition, Error, Message};
