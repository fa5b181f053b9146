//! Egress: where a component's connections may go, judged by the address a
//! name resolves to, at connect time.
//!
//! `allowed_outbound_hosts` compares spellings, which is what a manifest
//! means to allow. It cannot say where a spelling leads: `0.0.0.0`, `127.1`,
//! `2130706433`, `[::ffff:127.0.0.1]` or a name whose DNS answers `127.0.0.1`
//! all reach this machine's loopback. In `trellis serve` the platform's own
//! servers live there (its Postgres, its broker, the admin API), so every
//! address a tenant's connection would use is resolved first, checked here,
//! and the connection is made to exactly the address that was checked (no
//! second lookup a rebinding DNS server could answer differently).
//!
//! [`Egress::open`] (`trellis up`: the developer's own app) checks nothing.
//! [`Egress::guarded`] (`trellis serve`) denies:
//! - loopback, unspecified (`0.0.0.0`, `::`), link-local (`169.254.0.0/16`,
//!   where clouds answer metadata requests, and `fe80::/10`), multicast and
//!   broadcast addresses, unless the operator allows a network
//!   (`--tenant-allow-net`);
//! - networks the operator denies (`--tenant-deny-net`);
//! - always, whatever is allowed: the platform's own servers (its Postgres
//!   and broker, by the addresses their names resolve to) and the host's own
//!   listeners (public, admin, metrics) on any of this machine's addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::RwLock;

use ipnet::IpNet;
use sqlx::postgres::PgConnectOptions;

use crate::config::RuntimeConfig;

/// Why a connection was refused; the guest sees a denial, the log this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{host}:{port} resolves to {addr}, {why}")]
    Address {
        host: String,
        port: u16,
        addr: IpAddr,
        why: &'static str,
    },
    #[error("{host}:{port} does not resolve: {error}")]
    Unresolved {
        host: String,
        port: u16,
        error: String,
    },
}

/// Process-wide egress policy.
pub struct Egress {
    guard: Option<Guard>,
}

struct Guard {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    /// The platform's servers and the host's listeners.
    platform: RwLock<Vec<PlatformSocket>>,
}

#[derive(Debug, Clone)]
struct PlatformSocket {
    addr: SocketAddr,
    /// On this machine: every local address of the port may reach it.
    local: bool,
    what: &'static str,
}

impl Egress {
    /// The egress policy of `config`; when guarded, the platform's database
    /// server and broker are denied by every address their names resolve to.
    pub fn of(config: &RuntimeConfig, admin: &PgConnectOptions) -> Self {
        use std::net::ToSocketAddrs as _;
        let settings = &config.egress;
        if !settings.guarded {
            return Self::open();
        }
        let egress = Self::guarded(settings.allow.clone(), settings.deny.clone());
        // A server behind a Unix socket most likely listens on loopback too.
        let db_host = if admin.get_socket().is_some() || admin.get_host().starts_with('/') {
            "localhost"
        } else {
            admin.get_host()
        };
        let mut servers = vec![(
            db_host.to_owned(),
            admin.get_port(),
            "the platform's database server",
        )];
        if let Ok(url) = url::Url::parse(&config.amqp_url)
            && let Some(host) = url.host_str()
        {
            let port = url
                .port()
                .unwrap_or(if url.scheme() == "amqps" { 5671 } else { 5672 });
            servers.push((host.to_owned(), port, "the platform's broker"));
        }
        for (host, port, what) in servers {
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            match (host.as_str(), port).to_socket_addrs() {
                Ok(addrs) => addrs.for_each(|addr| egress.deny_platform(addr, what)),
                Err(err) => {
                    tracing::warn!(
                        "cannot resolve {what} ({host}:{port}) to deny it to tenants: {err}"
                    )
                }
            }
        }
        egress
    }

    /// No checks: `trellis up` runs its developer's own app.
    pub fn open() -> Self {
        Self { guard: None }
    }

    /// Tenants' egress: see the module's notes. `allow` and `deny` are the
    /// operator's networks.
    pub fn guarded(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        Self {
            guard: Some(Guard {
                allow,
                deny,
                platform: RwLock::new(Vec::new()),
            }),
        }
    }

    /// Whether connections are checked at all.
    pub fn is_guarded(&self) -> bool {
        self.guard.is_some()
    }

    /// Denies `addr` (a platform server or one of the host's listeners,
    /// `what`) to every checked connection. A listener bound to an
    /// unspecified address is denied on every address of this machine.
    pub fn deny_platform(&self, addr: SocketAddr, what: &'static str) {
        if let Some(guard) = &self.guard {
            guard
                .platform
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(PlatformSocket {
                    addr,
                    local: this_machine(addr.ip()),
                    what,
                });
        }
    }

    /// Resolves `host:port` (the host names in every spelling `getaddrinfo`
    /// accepts) and checks every address it gives. Returns them all, in the
    /// resolver's order, or the first denial: a name that resolves to any
    /// denied address is denied, so a round-robin answer cannot sneak one in.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Denied> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((bare, port)).await {
                Ok(addrs) => addrs.collect(),
                Err(err) => {
                    return Err(Denied::Unresolved {
                        host: host.to_owned(),
                        port,
                        error: err.to_string(),
                    });
                }
            },
        };
        if addrs.is_empty() {
            return Err(Denied::Unresolved {
                host: host.to_owned(),
                port,
                error: "no addresses".into(),
            });
        }
        for addr in &addrs {
            if let Err(why) = self.check(*addr) {
                return Err(Denied::Address {
                    host: host.to_owned(),
                    port,
                    addr: addr.ip(),
                    why,
                });
            }
        }
        Ok(addrs)
    }

    /// Whether a connection to `addr` is allowed; else why not.
    pub fn check(&self, addr: SocketAddr) -> Result<(), &'static str> {
        let Some(guard) = &self.guard else {
            return Ok(());
        };
        let ip = addr.ip().to_canonical();
        let port = addr.port();
        let platform = guard.platform.read().unwrap_or_else(|e| e.into_inner());
        for socket in platform.iter() {
            if socket.addr.port() != port {
                continue;
            }
            // A server on this machine may listen on all its addresses.
            if ip == socket.addr.ip().to_canonical() || socket.local && this_machine(ip) {
                return Err(socket.what);
            }
        }
        if guard.deny.iter().any(|net| net.contains(&ip)) {
            return Err("a network the operator denies (--tenant-deny-net)");
        }
        if guard.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        special(ip).map_or(Ok(()), Err)
    }
}

/// Addresses that reach this machine or its link rather than a server
/// somewhere: what they are, or `None`.
fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let a = v4.octets()[0];
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_unspecified() || a == 0 {
                Some("an unspecified address (this host)")
            } else if v4.is_link_local() {
                Some("a link-local address (cloud metadata lives there)")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("a multicast or broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.is_unspecified() {
                Some("an unspecified address (this host)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("a link-local address")
            } else if v6.is_multicast() {
                Some("a multicast address")
            } else {
                None
            }
        }
    }
}

/// Whether `ip` reaches this machine: loopback, unspecified, or one of its
/// own addresses (one it can bind).
fn this_machine(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback()
        || ip.is_unspecified()
        || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded() -> Egress {
        let egress = Egress::guarded(vec![], vec!["10.9.0.0/16".parse().unwrap()]);
        egress.deny_platform(
            "127.0.0.1:5432".parse().unwrap(),
            "the platform's database server",
        );
        egress.deny_platform("0.0.0.0:3001".parse().unwrap(), "the admin API");
        egress
    }

    #[tokio::test]
    async fn every_spelling_of_this_host_is_denied() {
        let egress = guarded();
        for host in [
            "0.0.0.0",
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "[::1]",
            "::ffff:127.0.0.1",
            "[::ffff:7f00:1]",
            "::",
            "localhost",
        ] {
            let denied = egress.resolve(host, 5432).await;
            assert!(denied.is_err(), "{host} was allowed: {denied:?}");
        }
    }

    #[tokio::test]
    async fn metadata_and_operator_denied_networks_are_refused() {
        let egress = guarded();
        for host in ["169.254.169.254", "[fe80::1]", "10.9.3.4", "224.0.0.1"] {
            assert!(egress.resolve(host, 80).await.is_err(), "{host}");
        }
        assert!(egress.resolve("10.8.3.4", 80).await.is_ok());
        assert!(egress.resolve("93.184.215.14", 443).await.is_ok());
    }

    #[tokio::test]
    async fn platform_sockets_stay_denied_when_loopback_is_allowed() {
        let egress = Egress::guarded(vec!["127.0.0.0/8".parse().unwrap()], vec![]);
        egress.deny_platform(
            "127.0.0.1:5432".parse().unwrap(),
            "the platform's database server",
        );
        egress.deny_platform("0.0.0.0:3001".parse().unwrap(), "the admin API");
        assert!(egress.resolve("127.0.0.1", 6379).await.is_ok());
        let denied = egress.resolve("0.0.0.0", 5432).await.unwrap_err();
        assert!(
            denied.to_string().contains("platform's database"),
            "{denied}"
        );
        assert!(egress.resolve("127.0.0.2", 3001).await.is_err());
        assert!(egress.resolve("127.1", 5432).await.is_err());
    }

    #[tokio::test]
    async fn up_checks_nothing() {
        assert!(Egress::open().resolve("127.0.0.1", 5432).await.is_ok());
    }
}
