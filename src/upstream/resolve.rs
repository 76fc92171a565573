//! Server names, resolved once and reused, refreshed in the background.
//!
//! Resolving a backend server's name for every connection costs a round
//! trip through the blocking thread pool (`getaddrinfo`) per session: about
//! 30–40 µs of CPU per session when the name is in `/etc/hosts`, and a DNS
//! query per session when it is not, which a reconnect storm multiplies. A
//! [`ServerAddress`] resolves its name on first use and keeps the answer for
//! `backends.NAME.dns_refresh`. After that, connections go on using the
//! answer while one background lookup fetches a new one. A failed lookup
//! keeps the old answer in use (and is logged): only a server that has never
//! been resolved fails its connection attempts on DNS.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BackendUrl;

/// The addresses a server name resolved to, in the resolver's order.
pub type Addresses = Arc<[SocketAddr]>;

/// A pending lookup.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send>>;

/// Turns a host name and port into addresses: the system's resolver in the
/// proxy, a scripted one in tests.
pub trait Resolve: Send + Sync + std::fmt::Debug {
    /// Looks `host` up, with `port` in every address.
    fn resolve(&self, host: &str, port: u16) -> Lookup;
}

/// The system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Lookup {
        let host = host.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Where one server is: a fixed address, or a name with its cached answer.
#[derive(Debug)]
pub struct ServerAddress(Kind);

#[derive(Debug)]
enum Kind {
    /// The URL names an IP address: nothing to resolve.
    Fixed(Addresses),
    /// The URL names a host.
    Named(Arc<Named>),
}

/// A host name, how to resolve it, and the last answer.
#[derive(Debug)]
struct Named {
    host: String,
    port: u16,
    /// How long an answer is used before it is refreshed.
    refresh: Duration,
    resolver: Arc<dyn Resolve>,
    /// `None` until the first lookup succeeds.
    answer: Mutex<Option<Answer>>,
}

/// The last successful lookup.
#[derive(Debug)]
struct Answer {
    addresses: Addresses,
    /// When it was obtained, or when the last refresh of it failed.
    at: Instant,
    /// A background refresh is under way.
    refreshing: bool,
}

impl ServerAddress {
    /// The address of the server at `url`, resolved by the system's
    /// resolver and refreshed every `refresh`.
    pub fn new(url: &BackendUrl, refresh: Duration) -> Self {
        Self::with_resolver(url, refresh, Arc::new(SystemResolver))
    }

    /// Like [`ServerAddress::new`], with another resolver.
    pub fn with_resolver(url: &BackendUrl, refresh: Duration, resolver: Arc<dyn Resolve>) -> Self {
        if let Ok(ip) = url.host.parse::<IpAddr>() {
            return ServerAddress(Kind::Fixed(Arc::new([SocketAddr::new(ip, url.port)])));
        }
        ServerAddress(Kind::Named(Arc::new(Named {
            host: url.host.clone(),
            port: url.port,
            refresh,
            resolver,
            answer: Mutex::new(None),
        })))
    }

    /// The addresses to connect to. A name is looked up on first use (and
    /// again while that fails); afterwards the cached answer comes back at
    /// once, and an answer older than the refresh interval starts one
    /// background lookup to replace it.
    pub async fn addresses(&self) -> io::Result<Addresses> {
        let named = match &self.0 {
            Kind::Fixed(addresses) => return Ok(addresses.clone()),
            Kind::Named(named) => named,
        };
        if let Some(answer) = named.lock().as_mut() {
            if answer.at.elapsed() >= named.refresh && !answer.refreshing {
                answer.refreshing = true;
                tokio::spawn(Named::refresh(Arc::clone(named)));
            }
            return Ok(answer.addresses.clone());
        }
        let addresses = named.lookup().await?;
        *named.lock() = Some(Answer {
            addresses: addresses.clone(),
            at: Instant::now(),
            refreshing: false,
        });
        Ok(addresses)
    }
}

impl Named {
    fn lock(&self) -> MutexGuard<'_, Option<Answer>> {
        // Nothing panics while holding it; a poisoned lock still holds a
        // consistent answer.
        self.answer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One lookup; an empty answer is an error.
    async fn lookup(&self) -> io::Result<Addresses> {
        let addresses = self.resolver.resolve(&self.host, self.port).await?;
        if addresses.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} resolved to no address", self.host),
            ));
        }
        Ok(addresses.into())
    }

    /// Replaces the answer with a fresh lookup, or keeps it if that fails.
    async fn refresh(self: Arc<Self>) {
        let result = self.lookup().await;
        let mut guard = self.lock();
        let Some(answer) = guard.as_mut() else {
            return;
        };
        answer.refreshing = false;
        answer.at = Instant::now();
        match result {
            Ok(addresses) => answer.addresses = addresses,
            Err(e) => tracing::warn!(
                server = %self.host,
                error = %e,
                "resolving the backend server failed; its last addresses stay in use"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver whose answer the test sets, counting its lookups.
    #[derive(Debug)]
    struct Scripted {
        answer: Mutex<io::Result<Vec<SocketAddr>>>,
        lookups: AtomicUsize,
    }

    impl Default for Scripted {
        fn default() -> Self {
            Scripted {
                answer: Mutex::new(Ok(Vec::new())),
                lookups: AtomicUsize::new(0),
            }
        }
    }

    impl Scripted {
        fn answer(&self, answer: io::Result<Vec<SocketAddr>>) {
            *self.answer.lock().unwrap() = answer;
        }

        fn lookups(&self) -> usize {
            self.lookups.load(Ordering::SeqCst)
        }
    }

    impl Resolve for Scripted {
        fn resolve(&self, _host: &str, _port: u16) -> Lookup {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let answer = match &*self.answer.lock().unwrap() {
                Ok(addresses) => Ok(addresses.clone()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            Box::pin(async move { answer })
        }
    }

    fn url(text: &str) -> BackendUrl {
        BackendUrl::parse(text).unwrap()
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    const REFRESH: Duration = Duration::from_secs(5);

    /// Lets the refresh task that `addresses` may have spawned run.
    async fn settle() {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn an_ip_address_is_never_looked_up() {
        let resolver = Arc::new(Scripted::default());
        let server =
            ServerAddress::with_resolver(&url("ws://[::1]:9001"), REFRESH, resolver.clone());
        let addresses = server.addresses().await.unwrap();
        assert_eq!(&addresses[..], addrs(&["[::1]:9001"]));
        assert_eq!(resolver.lookups(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_reused_then_refreshed_in_the_background() {
        let resolver = Arc::new(Scripted::default());
        resolver.answer(Ok(addrs(&["10.0.0.1:80", "10.0.0.2:80"])));
        let server =
            ServerAddress::with_resolver(&url("ws://echo.internal"), REFRESH, resolver.clone());
        for _ in 0..10 {
            let addresses = server.addresses().await.unwrap();
            assert_eq!(&addresses[..], addrs(&["10.0.0.1:80", "10.0.0.2:80"]));
        }
        assert_eq!(
            resolver.lookups(),
            1,
            "one lookup within the refresh interval"
        );

        resolver.answer(Ok(addrs(&["10.0.0.3:80"])));
        tokio::time::advance(REFRESH).await;
        // The stale answer serves at once; one refresh starts.
        let addresses = server.addresses().await.unwrap();
        assert_eq!(&addresses[..], addrs(&["10.0.0.1:80", "10.0.0.2:80"]));
        let _ = server.addresses().await.unwrap();
        settle().await;
        assert_eq!(
            resolver.lookups(),
            2,
            "a single refresh for concurrent users"
        );
        let addresses = server.addresses().await.unwrap();
        assert_eq!(&addresses[..], addrs(&["10.0.0.3:80"]));
        assert_eq!(resolver.lookups(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_answer() {
        let resolver = Arc::new(Scripted::default());
        resolver.answer(Ok(addrs(&["10.0.0.1:80"])));
        let server =
            ServerAddress::with_resolver(&url("ws://echo.internal"), REFRESH, resolver.clone());
        server.addresses().await.unwrap();
        resolver.answer(Err(io::Error::other("no DNS server answered")));
        tokio::time::advance(REFRESH).await;
        server.addresses().await.unwrap();
        settle().await;
        assert_eq!(resolver.lookups(), 2);
        let addresses = server.addresses().await.unwrap();
        assert_eq!(&addresses[..], addrs(&["10.0.0.1:80"]));
        // The failure counts as a refresh: the next try waits a whole interval.
        assert_eq!(resolver.lookups(), 2);
        resolver.answer(Ok(Vec::new()));
        tokio::time::advance(REFRESH).await;
        server.addresses().await.unwrap();
        settle().await;
        let addresses = server.addresses().await.unwrap();
        assert_eq!(
            &addresses[..],
            addrs(&["10.0.0.1:80"]),
            "an empty answer is a failure too"
        );
        assert_eq!(resolver.lookups(), 3);
    }

    #[tokio::test]
    async fn a_name_never_resolved_fails_until_it_resolves() {
        let resolver = Arc::new(Scripted::default());
        resolver.answer(Err(io::Error::new(io::ErrorKind::NotFound, "no such host")));
        let server = ServerAddress::with_resolver(
            &url("ws://echo.internal:9001"),
            REFRESH,
            resolver.clone(),
        );
        let error = server.addresses().await.unwrap_err();
        assert!(error.to_string().contains("no such host"), "{error}");
        resolver.answer(Ok(Vec::new()));
        let error = server.addresses().await.unwrap_err();
        assert!(
            error.to_string().contains("resolved to no address"),
            "{error}"
        );
        resolver.answer(Ok(addrs(&["10.0.0.1:9001"])));
        assert_eq!(
            &server.addresses().await.unwrap()[..],
            addrs(&["10.0.0.1:9001"])
        );
        assert_eq!(resolver.lookups(), 3);
    }

    #[tokio::test]
    async fn the_system_resolver_reads_the_hosts_file() {
        let addresses = SystemResolver.resolve("localhost", 9001).await.unwrap();
        assert!(
            addresses
                .iter()
                .all(|a| a.port() == 9001 && a.ip().is_loopback()),
            "{addresses:?}"
        );
        assert!(!addresses.is_empty());
    }
}
