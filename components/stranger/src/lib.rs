//! A test guest that imports an interface no host provides
//! (`acme:stranger/fortune`): a deployment of it must be refused at link
//! time, saying which import is missing, and change nothing.

mod bindings {
    spin_sdk::wit_bindgen::generate!({
        inline: "
            package acme:stranger;
            interface fortune {
                tell: func() -> string;
            }
            world stranger {
                import fortune;
            }
        ",
        runtime_path: "spin_sdk::wit_bindgen::rt",
    });
}

use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_req: IncomingRequest) -> Response {
    // Called, so the import stays in the component.
    let fortune = bindings::acme::stranger::fortune::tell();
    Response::builder().status(200).body(fortune).build()
}
