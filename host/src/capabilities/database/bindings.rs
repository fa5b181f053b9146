//! Generated bindings for `spin:postgres/postgres@4.0.0`, the interface
//! `spin_sdk::pg4` imports. The `connection` resource is backed by
//! [`super::Connection`].

wasmtime::component::bindgen!({
    path: "../wit/deps/spin-postgres@4.0.0",
    inline: "package trellis:database-host; world host { import spin:postgres/postgres@4.0.0; }",
    imports: { default: async | trappable },
    with: {
        "spin:postgres/postgres.connection": super::Connection,
    },
});

pub use spin::postgres::postgres::*;
