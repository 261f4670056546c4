//! Papercup's built-in TURN relay, so that browsers behind strict NATs and firewalls reach
//! the gateway without a separate coturn.
//!
//! Built on the `turn` crate's server (a patched copy, see `vendor/turn/PATCHES.md`), with
//! what a relay open to the internet needs around it: coturn-compatible ephemeral
//! credentials with secret rotation ([`credentials`]), a deny-by-default peer filter
//! ([`filter`]), per-user and total allocation quotas, bandwidth limits, bounded nonces,
//! TURN over UDP, TCP and TLS, and counters ([`metrics`]).
//!
//! Main type: [`TurnServer`], started from a [`TurnConfig`]. UDP has one TURN server
//! instance (one read loop); each TCP or TLS client connection gets its own instance over
//! a framing adapter ([`stream`]); all share one policy, so quotas are global. Allocation
//! close notifications from every instance feed one task that releases quota and logs.

#![forbid(unsafe_code)]

pub mod credentials;
pub mod filter;
pub mod metrics;
mod policy;
mod relay;
mod stream;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use turn::allocation::AllocationInfo;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;

pub use credentials::{mint, Credentials};
pub use filter::PeerFilter;
pub use metrics::{MetricsSnapshot, TurnMetrics};

/// Errors of the TURN relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The TURN server failed.
    #[error("TURN server: {0}")]
    Turn(#[from] turn::Error),
}

/// Settings of the relay (the `[turn]` section of `papercup.toml`).
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Realm of the long-term credentials.
    pub realm: String,
    /// Shared secrets, current first; older ones are still accepted (rotation).
    pub secrets: Vec<String>,
    /// UDP listener.
    pub udp: Option<SocketAddr>,
    /// Read loops on the UDP port (SO_REUSEPORT sockets; the kernel spreads clients by
    /// their address, so each client's allocation stays on one loop). Default: one per core.
    pub udp_workers: usize,
    /// TCP listener.
    pub tcp: Option<SocketAddr>,
    /// TLS listeners (e.g. 5349 and 443).
    pub tls: Vec<SocketAddr>,
    /// PEM certificate chain and key for TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key: Option<PathBuf>,
    /// Local address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Address advertised as the relayed address (1:1 NAT); default `relay_ip`.
    pub public_ip: Option<IpAddr>,
    /// Relay port range; `None`: any free port.
    pub relay_ports: Option<(u16, u16)>,
    /// Allocations one user may hold.
    pub max_allocations_per_user: usize,
    /// Allocations the server holds at most.
    pub max_allocations: usize,
    /// Bandwidth per allocation, bits per second (0: unlimited).
    pub max_bps_per_allocation: u64,
    /// Bandwidth of the whole relay, bits per second (0: unlimited).
    pub max_bps: u64,
    /// Longest allocation lifetime granted.
    pub max_lifetime: Duration,
    /// How long a nonce is valid.
    pub nonce_lifetime: Duration,
    /// Outstanding nonces kept at most.
    pub max_nonces: usize,
    /// Peers allowed even inside the denied ranges (CIDR).
    pub allow_peers: Vec<IpNet>,
    /// Peers denied in addition to the default ranges (CIDR).
    pub deny_peers: Vec<IpNet>,
    /// The gateway's own media addresses: always allowed.
    pub own_addresses: Vec<IpAddr>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            realm: "papercup".into(),
            secrets: Vec::new(),
            udp: Some(SocketAddr::from(([127, 0, 0, 1], 3478))),
            udp_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            tcp: None,
            tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            relay_ip: IpAddr::from([127, 0, 0, 1]),
            public_ip: None,
            relay_ports: None,
            max_allocations_per_user: 10,
            max_allocations: 10_000,
            max_bps_per_allocation: 0,
            max_bps: 0,
            max_lifetime: Duration::from_secs(3600),
            nonce_lifetime: Duration::from_secs(600),
            max_nonces: 100_000,
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
            own_addresses: Vec::new(),
        }
    }
}

/// A live allocation, for `papercup turn status`.
#[derive(Debug, Clone, Serialize)]
pub struct AllocationView {
    /// The REST username (`<expiry>:<user>`).
    pub username: String,
    /// The client's address.
    pub client: SocketAddr,
    /// udp, tcp or tls.
    pub transport: &'static str,
    /// The relayed address.
    pub relay: SocketAddr,
}

struct Instance {
    server: Server,
    transport: &'static str,
}

/// The running relay.
pub struct TurnServer {
    udp_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    metrics: Arc<TurnMetrics>,
    instances: Arc<Mutex<HashMap<u64, Arc<Instance>>>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("udp", &self.udp_addr)
            .field("tcp", &self.tcp_addr)
            .field("tls", &self.tls_addrs)
            .finish()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct Shared {
    realm: String,
    auth: Arc<credentials::RestAuth>,
    policy: Arc<policy::Policy>,
    relays: Arc<RelaysFactory>,
    close_tx: mpsc::Sender<AllocationInfo>,
}

/// Builds a relay generator per TURN instance (the crate takes ownership of one).
struct RelaysFactory {
    bind_ip: IpAddr,
    public_ip: IpAddr,
    ports: Option<(u16, u16)>,
    filter: Arc<PeerFilter>,
    metrics: Arc<TurnMetrics>,
    per_allocation_bps: u64,
    server_bucket: Arc<relay::Bucket>,
}

impl RelaysFactory {
    fn make(&self) -> Box<relay::Relays> {
        Box::new(relay::Relays {
            bind_ip: self.bind_ip,
            public_ip: self.public_ip,
            ports: self.ports,
            filter: self.filter.clone(),
            metrics: self.metrics.clone(),
            per_allocation_bps: self.per_allocation_bps,
            server_bucket: self.server_bucket.clone(),
        })
    }
}

impl Shared {
    async fn instance(
        &self,
        conn: Arc<dyn webrtc_util::Conn + Send + Sync>,
        transport: &'static str,
    ) -> Result<Instance, TurnError> {
        let server = Server::new(ServerConfig {
            conn_configs: vec![ConnConfig {
                conn,
                relay_addr_generator: self.relays.make(),
            }],
            realm: self.realm.clone(),
            auth_handler: self.auth.clone(),
            channel_bind_timeout: Duration::from_secs(0),
            alloc_close_notify: Some(self.close_tx.clone()),
            policy: Some(self.policy.clone()),
        })
        .await?;
        Ok(Instance { server, transport })
    }
}

fn load_tls(cert: &PathBuf, key: &PathBuf) -> Result<tokio_rustls::TlsAcceptor, TurnError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TurnError::Tls(format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TurnError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(TurnError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TurnError::Tls(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TurnError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

impl TurnServer {
    /// Binds every configured listener and starts relaying.
    pub async fn start(cfg: TurnConfig) -> Result<Self, TurnError> {
        if cfg.secrets.iter().all(|s| s.is_empty()) {
            return Err(TurnError::Config("no shared secret configured".into()));
        }
        let metrics = Arc::new(TurnMetrics::default());
        let filter = Arc::new(PeerFilter::new(
            &cfg.allow_peers,
            &cfg.deny_peers,
            &cfg.own_addresses,
        ));
        let policy = Arc::new(policy::Policy {
            filter: filter.clone(),
            per_user: cfg.max_allocations_per_user,
            total: cfg.max_allocations,
            max_lifetime: cfg.max_lifetime,
            nonce_lifetime: cfg.nonce_lifetime,
            max_nonces: cfg.max_nonces,
            metrics: metrics.clone(),
            users: Mutex::new(HashMap::new()),
        });
        let m = metrics.clone();
        let auth = Arc::new(credentials::RestAuth::new(
            cfg.secrets
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            Arc::new(unix_now),
            Arc::new(move || TurnMetrics::add(&m.auth_failures, 1)),
        ));
        let (close_tx, mut close_rx) = mpsc::channel::<AllocationInfo>(1024);
        let shared = Arc::new(Shared {
            realm: cfg.realm.clone(),
            auth,
            policy: policy.clone(),
            relays: Arc::new(RelaysFactory {
                bind_ip: cfg.relay_ip,
                public_ip: cfg.public_ip.unwrap_or(cfg.relay_ip),
                ports: cfg.relay_ports,
                filter,
                metrics: metrics.clone(),
                per_allocation_bps: cfg.max_bps_per_allocation,
                server_bucket: Arc::new(relay::Bucket::new(cfg.max_bps / 8)),
            }),
            close_tx,
        });
        let (stop, stop_rx) = watch::channel(false);
        let instances: Arc<Mutex<HashMap<u64, Arc<Instance>>>> = Arc::default();
        let next_id = Arc::new(AtomicU64::new(1));
        let mut tasks = Vec::new();

        // Closed allocations give their quota back.
        tasks.push(tokio::spawn(async move {
            while let Some(info) = close_rx.recv().await {
                policy.closed(&info.username);
                tracing::info!(
                    user = policy::user_of(&info.username),
                    client = %info.five_tuple.src_addr,
                    relay = %info.relay_addr,
                    "TURN allocation closed"
                );
            }
        }));

        let mut udp_addr = None;
        if let Some(addr) = cfg.udp {
            // The TURN read loop handles one datagram at a time: several sockets on the
            // same port (SO_REUSEPORT) give one loop per core.
            if addr.port() != 0 {
                // SO_REUSEPORT would let a second relay silently share a port in use (and
                // split its clients): make sure nobody holds it first.
                std::net::UdpSocket::bind(addr)
                    .map_err(|source| TurnError::Bind { addr, source })?;
            }
            let mut bind_to = addr;
            for worker in 0..cfg.udp_workers.max(1) {
                let sock =
                    udp_socket(bind_to).map_err(|source| TurnError::Bind { addr, source })?;
                let local = sock
                    .local_addr()
                    .map_err(|source| TurnError::Bind { addr, source })?;
                bind_to = local; // with port 0 the other workers join the port the first got
                udp_addr = Some(local);
                let inst = shared.instance(Arc::new(sock), "udp").await?;
                lock(&instances).insert(u64::MAX - worker as u64, Arc::new(inst));
            }
        }

        let mut tcp_addr = None;
        if let Some(addr) = cfg.tcp {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| TurnError::Bind { addr, source })?;
            tcp_addr = Some(
                l.local_addr()
                    .map_err(|source| TurnError::Bind { addr, source })?,
            );
            tasks.push(tokio::spawn(accept_loop(
                l,
                None,
                shared.clone(),
                instances.clone(),
                next_id.clone(),
                stop_rx.clone(),
            )));
        }

        let mut tls_addrs = Vec::new();
        if !cfg.tls.is_empty() {
            let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
                (Some(c), Some(k)) => (c, k),
                _ => {
                    return Err(TurnError::Config(
                        "TLS listeners need turn.tls_cert and turn.tls_key".into(),
                    ))
                }
            };
            let acceptor = load_tls(cert, key)?;
            for addr in &cfg.tls {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| TurnError::Bind {
                        addr: *addr,
                        source,
                    })?;
                tls_addrs.push(l.local_addr().map_err(|source| TurnError::Bind {
                    addr: *addr,
                    source,
                })?);
                tasks.push(tokio::spawn(accept_loop(
                    l,
                    Some(acceptor.clone()),
                    shared.clone(),
                    instances.clone(),
                    next_id.clone(),
                    stop_rx.clone(),
                )));
            }
        }
        tracing::info!(udp = ?udp_addr, tcp = ?tcp_addr, tls = ?tls_addrs, "TURN relay listening");
        Ok(Self {
            udp_addr,
            tcp_addr,
            tls_addrs,
            metrics,
            instances,
            stop,
            tasks,
        })
    }

    /// The bound UDP address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The bound TLS addresses.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Every live allocation on this host.
    pub async fn allocations(&self) -> Vec<AllocationView> {
        let insts: Vec<Arc<Instance>> = lock(&self.instances).values().cloned().collect();
        let mut out = Vec::new();
        for inst in insts {
            if let Ok(infos) = inst.server.get_allocations_info(None).await {
                out.extend(infos.into_values().map(|i| AllocationView {
                    username: i.username,
                    client: i.five_tuple.src_addr,
                    transport: inst.transport,
                    relay: i.relay_addr,
                }));
            }
        }
        out.sort_by(|a, b| a.username.cmp(&b.username).then(a.client.cmp(&b.client)));
        out
    }

    /// Stops every listener and closes every allocation.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        let insts: Vec<Arc<Instance>> = lock(&self.instances).drain().map(|(_, v)| v).collect();
        for inst in insts {
            let _ = inst.server.close().await;
        }
        for t in self.tasks {
            t.abort();
        }
    }
}

/// A UDP socket with SO_REUSEPORT and large buffers (bursts of media must not overflow
/// the default 208 KiB while a read loop is busy).
pub(crate) fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    instances: Arc<Mutex<HashMap<u64, Arc<Instance>>>>,
    next_id: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "TURN accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let (shared, instances, next_id) = (shared.clone(), instances.clone(), next_id.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            let (conn, transport): (Arc<dyn ConnWithGone>, &'static str) = match tls {
                None => (
                    Arc::new(stream::StreamConn::new(stream, local, peer)),
                    "tcp",
                ),
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await;
                    match handshake {
                        Ok(Ok(s)) => (Arc::new(stream::StreamConn::new(s, local, peer)), "tls"),
                        _ => {
                            tracing::debug!(client = %peer, "TLS handshake failed");
                            return;
                        }
                    }
                }
            };
            let inst = match shared.instance(conn.clone().as_conn(), transport).await {
                Ok(i) => Arc::new(i),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a TURN instance");
                    return;
                }
            };
            lock(&instances).insert(id, inst.clone());
            // The connection's end ends its allocations.
            conn.wait_gone().await;
            lock(&instances).remove(&id);
            let _ = inst.server.close().await;
        });
    }
}

/// A stream connection as the TURN server's `Conn`, with a way to wait for its end.
#[async_trait::async_trait]
trait ConnWithGone: Send + Sync {
    fn as_conn(self: Arc<Self>) -> Arc<dyn webrtc_util::Conn + Send + Sync>;
    async fn wait_gone(&self);
}

#[async_trait::async_trait]
impl<S> ConnWithGone for stream::StreamConn<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Sync + 'static,
{
    fn as_conn(self: Arc<Self>) -> Arc<dyn webrtc_util::Conn + Send + Sync> {
        self
    }

    async fn wait_gone(&self) {
        self.gone.notified().await;
    }
}

/// The `turn:`/`turns:` URLs of a relay reachable at `host`.
pub fn urls(host: &str, cfg: &TurnConfig) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(a) = cfg.udp {
        v.push(format!("turn:{host}:{}?transport=udp", a.port()));
    }
    if let Some(a) = cfg.tcp {
        v.push(format!("turn:{host}:{}?transport=tcp", a.port()));
    }
    for a in &cfg.tls {
        v.push(format!("turns:{host}:{}?transport=tcp", a.port()));
    }
    v
}
