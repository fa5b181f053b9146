//! Platform mode (`trellis serve`): many tenants' apps in one process,
//! deployed through an admin API, their state in Postgres so that every host
//! sharing the database serves the same deployments.
//!
//! - [`names`]: tenant and app names, and the host names that route to them
//!   (`<app>.<tenant>.<base domain>`).
//! - [`store`]: tenants, component bytes, apps and numbered versions in the
//!   `trellis_platform` schema; changes announced with `NOTIFY`.
//! - [`registry`]: the apps this host serves, swapped whole on a change.
//! - [`admin`]: the admin API.
//! - [`cleanup`]: what deleting a tenant removes besides its rows.

pub mod admin;
mod cleanup;
pub mod names;
pub mod quota;
pub mod registry;
pub mod sealed;
pub mod store;

pub use registry::Platform;
