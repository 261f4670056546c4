//! The SIP core: rsipstack's transports, transactions and dialogs behind our own thin
//! wrapper. Listens on UDP, TCP and TLS; every received message passes the abuse guard and
//! edge validation first (see [`crate::edge`]); REGISTER goes to the registrar, OPTIONS is
//! answered, INVITEs and in-dialog requests go to call handling.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Method, SipMessage, StatusCode, Transport};
use rsipstack::transaction::Transaction;
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{
    FilterVerdict, IncomingFilter, SipConnection, TcpListenerConnection, TlsConfig,
    TlsListenerConnection, TransportLayer,
};
use rsipstack::EndpointBuilder;
use storage::Db;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::abuse::{AbuseConfig, AbuseGuard, Refusal};
use crate::b2bua::{CallControl, ServerLeg};
use crate::edge::{self, EdgeVerdict};
use crate::metrics::SipMetrics;
use crate::outbound::DialogGuard;
use crate::registrar::{Registrar, RegistrarConfig, Reply};

/// Methods we implement (sent in Allow).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO";

/// Everything the SIP core needs to start.
#[derive(Debug, Clone)]
pub struct SipConfig {
    pub udp: Vec<SocketAddr>,
    /// TCP listeners (a port must be given: 0 is refused).
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Address advertised in Via/Contact/SDP when the host is behind 1:1 NAT.
    pub public_ip: Option<IpAddr>,
    pub registrar: RegistrarConfig,
    pub abuse: AbuseConfig,
    /// Session timer we ask for (RFC 4028), seconds.
    pub session_expires: u32,
    /// Smallest session interval we accept (Min-SE, ≥ 90).
    pub min_se: u32,
    pub user_agent: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            udp: vec![SocketAddr::from(([0, 0, 0, 0], 5060))],
            tcp: vec![SocketAddr::from(([0, 0, 0, 0], 5060))],
            tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            public_ip: None,
            registrar: RegistrarConfig::default(),
            abuse: AbuseConfig::default(),
            session_expires: 1800,
            min_se: 90,
            user_agent: concat!("papercup/", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// Why the SIP core could not start.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    #[error("sip: cannot listen on {transport} {addr}: {reason}")]
    Listen {
        transport: &'static str,
        addr: SocketAddr,
        reason: String,
    },
    #[error("sip: TLS listeners need sip.tls_cert and sip.tls_key")]
    TlsWithoutCert,
    #[error("sip: cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sip: {0}")]
    Stack(String),
}

/// Edge filter: abuse guard, then RFC 4475-grade validation.
struct EdgeFilter {
    abuse: Arc<AbuseGuard>,
    metrics: Arc<SipMetrics>,
}

impl IncomingFilter for EdgeFilter {
    fn filter(
        &self,
        source: SocketAddr,
        transport: Transport,
        raw: &[u8],
        parsed: Result<&SipMessage, &str>,
    ) -> FilterVerdict {
        // Responses are not rate-limited: they answer our own requests (a busy trunk sends
        // many), and one matching no transaction is dropped by the stack at once.
        let is_response = matches!(parsed, Ok(SipMessage::Response(_)));
        let admitted = if is_response {
            if self.abuse.is_blocked(source.ip()) {
                Err(Refusal::Blocked)
            } else {
                Ok(())
            }
        } else {
            self.abuse.admit(source.ip())
        };
        match admitted {
            Ok(()) => {}
            Err(Refusal::Blocked) => {
                SipMetrics::inc(&self.metrics.dropped_blocked);
                return FilterVerdict::Drop;
            }
            Err(Refusal::RateLimited) => {
                SipMetrics::inc(&self.metrics.dropped_rate_limited);
                return FilterVerdict::Drop;
            }
        }
        let reliable = !matches!(transport, Transport::Udp);
        match edge::check(raw, parsed, reliable) {
            EdgeVerdict::Accept => FilterVerdict::Accept,
            EdgeVerdict::Drop { reason } => {
                SipMetrics::inc(&self.metrics.malformed);
                debug!(%source, %reason, "dropped a malformed message");
                FilterVerdict::Drop
            }
            EdgeVerdict::Reply {
                status,
                reason,
                bytes,
            } => {
                SipMetrics::inc(&self.metrics.malformed);
                self.metrics.response_sent(status);
                debug!(%source, status, %reason, "refused a malformed request");
                FilterVerdict::Reply(bytes)
            }
        }
    }
}

/// A cheap handle on a running core's counters and blocked sources (for the admin API).
#[derive(Debug, Clone)]
pub struct SipStatus {
    metrics: Arc<SipMetrics>,
    abuse: Arc<AbuseGuard>,
    addrs: Vec<String>,
}

/// What `GET /admin/sip/status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SipStatusSnapshot {
    pub listening: Vec<String>,
    pub metrics: crate::metrics::SipMetricsSnapshot,
    /// Sources blocked now: address and seconds left.
    pub blocked: Vec<(String, u64)>,
}

impl SipStatus {
    pub fn snapshot(&self) -> SipStatusSnapshot {
        let mut blocked: Vec<(String, u64)> = self
            .abuse
            .blocked()
            .into_iter()
            .map(|(ip, left)| (ip.to_string(), left.as_secs()))
            .collect();
        blocked.sort();
        SipStatusSnapshot {
            listening: self.addrs.clone(),
            metrics: self.metrics.snapshot(),
            blocked,
        }
    }
}

/// A running SIP core.
pub struct SipServer {
    dialogs: Arc<DialogLayer>,
    registrar: Arc<Registrar>,
    abuse: Arc<AbuseGuard>,
    metrics: Arc<SipMetrics>,
    config: Arc<SipConfig>,
    cancel: CancellationToken,
    addrs: Vec<(Transport, SocketAddr)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dispatch: Arc<Dispatch>,
}

impl std::fmt::Debug for SipServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipServer")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

fn check_stream_port(transport: &'static str, addr: SocketAddr) -> Result<(), SipError> {
    if addr.port() == 0 {
        return Err(SipError::Listen {
            transport,
            addr,
            reason: "give a port (0 is not supported for stream transports)".into(),
        });
    }
    // rsipstack binds stream listeners later and only logs a failure: bind once here so a
    // port in use is an error at start.
    std::net::TcpListener::bind(addr).map_err(|e| SipError::Listen {
        transport,
        addr,
        reason: e.to_string(),
    })?;
    Ok(())
}

impl SipServer {
    /// Binds every listener and starts serving.
    pub async fn start(config: SipConfig, db: Db) -> Result<Self, SipError> {
        let cancel = CancellationToken::new();
        let transport = TransportLayer::new(cancel.clone());
        let metrics = Arc::new(SipMetrics::default());
        let abuse = Arc::new(AbuseGuard::new(config.abuse.clone()));
        let mut addrs = Vec::new();
        let external =
            |addr: SocketAddr| config.public_ip.map(|ip| SocketAddr::new(ip, addr.port()));

        for &addr in &config.udp {
            let ext = external(addr);
            if ext.is_some() && addr.port() == 0 {
                return Err(SipError::Listen {
                    transport: "udp",
                    addr,
                    reason: "give a port when sip.public_ip is set (the NAT forwards fixed ports)"
                        .into(),
                });
            }
            let conn = UdpConnection::create_connection(addr, ext, Some(cancel.child_token()))
                .await
                .map_err(|e| SipError::Listen {
                    transport: "udp",
                    addr,
                    reason: e.to_string(),
                })?;
            let local = conn
                .get_addr()
                .get_socketaddr()
                .map_err(|e| SipError::Stack(e.to_string()))?;
            addrs.push((Transport::Udp, local));
            transport.add_transport(SipConnection::Udp(conn));
        }
        for &addr in &config.tcp {
            check_stream_port("tcp", addr)?;
            let l = TcpListenerConnection::new(addr, external(addr))
                .await
                .map_err(|e| SipError::Stack(e.to_string()))?;
            addrs.push((Transport::Tcp, addr));
            transport.add_transport(SipConnection::TcpListener(l));
        }
        if !config.tls.is_empty() {
            let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
                return Err(SipError::TlsWithoutCert);
            };
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|source| SipError::ReadFile {
                    path: p.clone(),
                    source,
                })
            };
            let tls = TlsConfig {
                cert: Some(read(cert)?),
                key: Some(read(key)?),
                ..TlsConfig::default()
            };
            for &addr in &config.tls {
                check_stream_port("tls", addr)?;
                let l = TlsListenerConnection::new(addr, external(addr), tls.clone())
                    .await
                    .map_err(|e| SipError::Listen {
                        transport: "tls",
                        addr,
                        reason: e.to_string(),
                    })?;
                addrs.push((Transport::Tls, addr));
                transport.add_transport(SipConnection::TlsListener(l));
            }
        }
        transport.set_incoming_filter(Arc::new(EdgeFilter {
            abuse: abuse.clone(),
            metrics: metrics.clone(),
        }));
        let guard = abuse.clone();
        let counters = metrics.clone();
        transport.set_whitelist(move |ip: IpAddr| {
            let blocked = guard.is_blocked(ip);
            if blocked {
                SipMetrics::inc(&counters.dropped_blocked);
            }
            async move { !blocked }
        });

        let endpoint = EndpointBuilder::new()
            .with_option(rsipstack::transaction::endpoint::EndpointOption {
                // Call-IDs end in "@papercup", not the stack's default domain.
                callid_suffix: Some("papercup".into()),
                ..Default::default()
            })
            .with_cancel_token(cancel.clone())
            .with_transport_layer(transport)
            .with_user_agent(&config.user_agent)
            .with_allows(vec![
                Method::Invite,
                Method::Ack,
                Method::Cancel,
                Method::Bye,
                Method::Options,
                Method::Register,
                Method::Update,
                Method::Info,
            ])
            .build();
        let inner = endpoint.inner.clone();
        let mut incoming = endpoint
            .incoming_transactions()
            .map_err(|e| SipError::Stack(e.to_string()))?;
        let dialogs = Arc::new(DialogLayer::new(inner.clone()));
        let registrar = Arc::new(Registrar::new(
            config.registrar.clone(),
            db,
            abuse.clone(),
            metrics.clone(),
        ));
        let mut tasks = Vec::new();
        let serve_inner = inner.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve_inner.serve().await {
                warn!(error = %e, "sip endpoint stopped");
            }
        }));
        let ctx = Arc::new(Dispatch {
            registrar: registrar.clone(),
            dialogs: dialogs.clone(),
            metrics: metrics.clone(),
            control: std::sync::RwLock::new(None),
            min_se: config.min_se,
            contact: addrs
                .iter()
                .find(|(t, _)| *t == Transport::Udp)
                .and_then(|(_, a)| {
                    let a = crate::outbound::advertised(&config, *a);
                    format!("sip:papercup@{a}").as_str().try_into().ok()
                }),
        });
        let dispatch = ctx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(tx) = incoming.recv().await {
                let ctx = ctx.clone();
                tokio::spawn(async move { ctx.handle(tx).await });
            }
        }));
        info!(?addrs, "sip listening");
        Ok(Self {
            dialogs,
            registrar,
            abuse,
            metrics,
            config: Arc::new(config),
            cancel,
            addrs,
            tasks,
            dispatch,
        })
    }

    /// Wires call control: from now on calls from seats are routed to trunks and calls
    /// from trunks to seats (without it every call gets 480).
    pub fn set_call_control(&self, control: Arc<CallControl>) {
        *self
            .dispatch
            .control
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(control);
    }

    /// Bound addresses, by transport.
    pub fn addrs(&self) -> &[(Transport, SocketAddr)] {
        &self.addrs
    }

    /// The first bound address of `transport`.
    pub fn addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// The listeners as `transport:ip:port` (`udp:127.0.0.1:5060`).
    pub fn listening(&self) -> Vec<String> {
        self.addrs
            .iter()
            .map(|(t, a)| format!("{}:{a}", t.to_string().to_ascii_lowercase()))
            .collect()
    }

    /// A handle for status reporting.
    pub fn status(&self) -> SipStatus {
        SipStatus {
            metrics: self.metrics.clone(),
            abuse: self.abuse.clone(),
            addrs: self.listening(),
        }
    }

    pub fn metrics(&self) -> &Arc<SipMetrics> {
        &self.metrics
    }

    pub fn abuse(&self) -> &Arc<AbuseGuard> {
        &self.abuse
    }

    pub fn registrar(&self) -> &Arc<Registrar> {
        &self.registrar
    }

    pub fn dialogs(&self) -> &Arc<DialogLayer> {
        &self.dialogs
    }

    pub fn config(&self) -> &SipConfig {
        &self.config
    }

    /// A handle that places calls (for call control).
    pub fn caller(&self) -> crate::outbound::Caller {
        crate::outbound::Caller {
            dialogs: self.dialogs.clone(),
            metrics: self.metrics.clone(),
            config: self.config.clone(),
            abuse: self.abuse.clone(),
            local: self.addr(Transport::Udp),
        }
    }

    /// Stops listening and every task.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

struct Dispatch {
    registrar: Arc<Registrar>,
    dialogs: Arc<DialogLayer>,
    metrics: Arc<SipMetrics>,
    /// Call control, once `serve` wired it (without it every call gets 480).
    control: std::sync::RwLock<Option<Arc<CallControl>>>,
    min_se: u32,
    /// Contact we put in answers.
    contact: Option<rsipstack::sip::Uri>,
}

fn source_of(tx: &Transaction) -> Option<(SocketAddr, String)> {
    let remote = tx.connection.as_ref()?.get_remote_addr()?;
    let addr = remote.get_socketaddr().ok()?;
    let kind = remote
        .r#type
        .map_or_else(|| "udp".to_string(), |t| t.to_string().to_ascii_lowercase());
    Some((addr, kind))
}

fn has_to_tag(tx: &Transaction) -> bool {
    tx.original
        .to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .is_some()
}

impl Dispatch {
    /// An initial INVITE from a desk phone: digest auth of its seat (407), session timer
    /// check (422), then the router decides.
    async fn invite_from_seat(
        &self,
        tx: &Transaction,
        source: SocketAddr,
    ) -> Result<crate::store::Seat, Reply> {
        let req = &tx.original;
        let Some(user) = req
            .from_header()
            .ok()
            .and_then(|f| f.uri().ok())
            .and_then(|u| u.user().map(str::to_string))
        else {
            return Err(Reply::refusal(
                StatusCode::BadRequest,
                "From has no user part",
            ));
        };
        let seat = match self
            .registrar
            .authenticate(req, source.ip(), &user, true)
            .await
        {
            crate::registrar::AuthOutcome::Ok(s) => s.seat,
            crate::registrar::AuthOutcome::Refuse(r) => return Err(r),
        };
        let se = crate::outbound::header_value(&req.headers, "session-expires");
        if let crate::session_timer::Negotiation::TooSmall { min_se } =
            crate::session_timer::negotiate_request(se, self.min_se, false)
        {
            let mut r = Reply::refusal(
                StatusCode::SessionIntervalTooSmall,
                format!("Session-Expires below Min-SE {min_se}"),
            );
            r.headers.push(Header::MinSE(min_se.to_string().into()));
            return Err(r);
        }
        Ok(seat)
    }

    fn control(&self) -> Option<Arc<CallControl>> {
        self.control
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the server side of an INVITE's dialog for call control.
    fn server_leg(&self, tx: &Transaction) -> Result<ServerLeg, Reply> {
        let (state_tx, states) = self.dialogs.new_dialog_state_channel();
        let dialog = self
            .dialogs
            .get_or_create_server_invite(tx, state_tx, None, self.contact.clone())
            .map_err(|e| {
                warn!(error = %e, "cannot open a dialog");
                Reply::refusal(StatusCode::ServerInternalError, "cannot open a dialog")
            })?;
        let guard = DialogGuard::new(self.dialogs.clone(), dialog.id(), self.metrics.clone());
        Ok(ServerLeg {
            dialog,
            states,
            request: tx.original.clone(),
            _guard: guard,
        })
    }

    /// An initial INVITE: from a trunk's allowed source to our numbers, else from a seat
    /// (digest auth). The transaction is driven here until the ACK (or CANCEL) while call
    /// control works on the dialog.
    async fn invite(&self, mut tx: Transaction, source: SocketAddr) {
        let control = self.control();
        let trunk = control
            .as_ref()
            .and_then(|c| c.trunk_for_source(source.ip()));
        let seat = match trunk {
            Some(_) => None,
            None => match self.invite_from_seat(&tx, source).await {
                Ok(seat) => Some(seat),
                Err(reply) => return self.reply(&mut tx, reply).await,
            },
        };
        let Some(control) = control else {
            let reply = Reply::refusal(
                StatusCode::TemporarilyUnavailable,
                "no route: call control is not running on this host",
            );
            return self.reply(&mut tx, reply).await;
        };
        let leg = match self.server_leg(&tx) {
            Ok(l) => l,
            Err(reply) => return self.reply(&mut tx, reply).await,
        };
        let mut dialog = leg.dialog.clone();
        match (seat, trunk) {
            (Some(seat), _) => {
                tokio::spawn(control.seat_call(seat, leg));
            }
            (None, Some(trunk)) => {
                tokio::spawn(control.trunk_call(trunk, leg));
            }
            (None, None) => return,
        }
        if let Err(e) = dialog.handle(&mut tx).await {
            debug!(error = %e, "INVITE transaction ended with an error");
        }
    }

    async fn reply(&self, tx: &mut Transaction, reply: Reply) {
        self.metrics.response_sent(reply.status.code());
        if let Err(e) = tx.reply_with(reply.status, reply.headers, None).await {
            debug!(error = %e, "reply failed");
        }
    }

    async fn handle(&self, mut tx: Transaction) {
        let method = tx.original.method().to_string();
        self.metrics.request(&method);
        let Some((source, transport)) = source_of(&tx) else {
            warn!("request without a source connection");
            return;
        };
        match tx.original.method() {
            Method::Register => {
                let reply = self
                    .registrar
                    .register(&tx.original, source, &transport)
                    .await;
                debug!(%source, status = %reply.status, reason = %reply.reason, "REGISTER");
                self.reply(&mut tx, reply).await;
            }
            Method::Invite if !has_to_tag(&tx) => self.invite(tx, source).await,
            Method::Options => {
                let mut r = Reply::new(StatusCode::OK, "");
                r.headers.push(Header::Allow(ALLOW.into()));
                r.headers.push(Header::Accept("application/sdp".into()));
                r.headers.push(Header::Supported("timer".into()));
                self.reply(&mut tx, r).await;
            }
            _ => {
                if let Some(mut dialog) = self.dialogs.match_dialog(&tx) {
                    if let Err(e) = dialog.handle(&mut tx).await {
                        debug!(error = %e, "in-dialog request failed");
                    }
                    return;
                }
                let in_dialog = tx
                    .original
                    .to_header()
                    .ok()
                    .and_then(|t| t.tag().ok().flatten())
                    .is_some();
                let status = if in_dialog || matches!(tx.original.method(), Method::Bye) {
                    StatusCode::CallTransactionDoesNotExist
                } else {
                    match tx.original.method() {
                        Method::Invite => StatusCode::TemporarilyUnavailable,
                        _ => StatusCode::MethodNotAllowed,
                    }
                };
                let allow = status == StatusCode::MethodNotAllowed;
                let mut r = Reply::new(status, "");
                if allow {
                    r.headers.push(Header::Allow(ALLOW.into()));
                }
                self.reply(&mut tx, r).await;
            }
        }
    }
}
