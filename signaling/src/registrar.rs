//! The registrar for desk phones (RFC 3261 §10.3) with digest authentication against the
//! seats in the database, our own nonce store, and the abuse guard.
//!
//! Answers: 401 with a fresh challenge (SHA-256 first, then MD5, RFC 8760) when there are
//! no credentials or the nonce is stale (`stale=true`); 403 for a wrong password, an unknown
//! or disabled seat, or a replayed nonce count (each a failure counted against the source);
//! 423 with Min-Expires below `min_expires`; 500 for an out-of-order REGISTER; 200 with every
//! live binding of the seat otherwise.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Request, StatusCode};
use storage::Db;
use tracing::{debug, info, warn};

use crate::abuse::AbuseGuard;
use crate::digest::{self, Algorithm};
use crate::metrics::SipMetrics;
use crate::nonce::{NonceCheck, NonceStore};
use crate::store::{self, ApplyOutcome, Binding, BindingChange};

/// Registrar settings.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub realm: String,
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub nonce_lifetime: Duration,
    pub node_id: String,
    /// Challenges offered, in order of preference. MD5 alone by default: baresip 1.0
    /// (libre) gives up with ENOSYS on a response carrying any SHA-256 challenge, even
    /// next to an MD5 one, and many desk phones behave alike. Phones that speak SHA-256
    /// (RFC 8760) can be offered `[Sha256, Md5]`.
    pub algorithms: Vec<Algorithm>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            realm: "papercup".into(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            nonce_lifetime: Duration::from_secs(300),
            node_id: "node-1".into(),
            algorithms: vec![Algorithm::Md5],
        }
    }
}

/// The answer to one REGISTER: status, extra headers, and a reason for logs.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<Header>,
    pub reason: String,
}

impl Reply {
    /// A reply with no extra header.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            reason: reason.into(),
        }
    }

    /// A refusal that tells the peer why: `Warning: 399 papercup "<reason>"`.
    pub fn refusal(status: StatusCode, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let mut r = Self::new(status, reason.clone());
        r.headers.push(Header::Warning(
            format!("399 papercup \"{}\"", reason.replace('"', "'")).into(),
        ));
        r
    }
}

/// Result of checking a request's digest credentials against a seat.
#[derive(Debug)]
pub enum AuthOutcome {
    /// Authenticated as this seat.
    Ok(store::SeatSecret),
    /// Answer with this (a challenge or a refusal).
    Refuse(Reply),
}

/// The registrar and digest verifier (also used for INVITEs from seats, with 407).
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    db: Db,
    nonces: NonceStore,
    opaque: String,
    abuse: Arc<AbuseGuard>,
    metrics: Arc<SipMetrics>,
}

impl Registrar {
    pub fn new(
        config: RegistrarConfig,
        db: Db,
        abuse: Arc<AbuseGuard>,
        metrics: Arc<SipMetrics>,
    ) -> Self {
        let nonces = NonceStore::new(config.nonce_lifetime, 100_000);
        let opaque = nonces.issue();
        Self {
            config,
            db,
            nonces,
            opaque,
            abuse,
            metrics,
        }
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    fn challenge(&self, proxy: bool, stale: bool, reason: &str) -> Reply {
        let nonce = self.nonces.issue();
        let mut reply = Reply::new(
            if proxy {
                StatusCode::ProxyAuthenticationRequired
            } else {
                StatusCode::Unauthorized
            },
            reason,
        );
        for &alg in &self.config.algorithms {
            let value = digest::challenge(alg, &self.config.realm, &nonce, &self.opaque, stale);
            reply.headers.push(if proxy {
                Header::ProxyAuthenticate(value.into())
            } else {
                Header::WwwAuthenticate(value.into())
            });
        }
        reply
    }

    fn failure(&self, source: IpAddr, reason: String) -> Reply {
        SipMetrics::inc(&self.metrics.auth_failures);
        if self.abuse.auth_failed(source) {
            SipMetrics::inc(&self.metrics.sources_blocked);
            warn!(%source, "source blocked after repeated authentication failures");
        }
        debug!(%source, %reason, "authentication failed");
        Reply::refusal(StatusCode::Forbidden, reason)
    }

    /// Verifies the digest credentials of `req` (`Authorization`, or `Proxy-Authorization`
    /// when `proxy`) for the seat named `aor_user`.
    pub async fn authenticate(
        &self,
        req: &Request,
        source: IpAddr,
        aor_user: &str,
        proxy: bool,
    ) -> AuthOutcome {
        let realm = &self.config.realm;
        let mut creds = None;
        for h in req.headers.iter() {
            let value = match (h, proxy) {
                (Header::Authorization(a), false) => a.value(),
                (Header::ProxyAuthorization(a), true) => a.value(),
                _ => continue,
            };
            match digest::parse(value) {
                Ok(p) if p.realm.as_deref() == Some(realm.as_str()) => {
                    creds = Some(p);
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    return AuthOutcome::Refuse(
                        self.failure(source, format!("bad credentials: {e}")),
                    )
                }
            }
        }
        let Some(p) = creds else {
            return AuthOutcome::Refuse(self.challenge(proxy, false, "credentials required"));
        };
        let (Some(username), Some(nonce), Some(uri), Some(resp)) = (
            p.username.as_deref(),
            p.nonce.as_deref(),
            p.uri.as_deref(),
            p.response.as_deref(),
        ) else {
            return AuthOutcome::Refuse(
                self.failure(source, "digest credentials incomplete".into()),
            );
        };
        let Some(algorithm) =
            Algorithm::parse(p.algorithm.as_deref()).filter(|a| self.config.algorithms.contains(a))
        else {
            return AuthOutcome::Refuse(self.challenge(proxy, false, "unsupported algorithm"));
        };
        if !self.nonces.is_live(nonce) {
            return AuthOutcome::Refuse(self.challenge(proxy, true, "stale nonce"));
        }
        if p.opaque.as_deref().is_some_and(|o| o != self.opaque) {
            return AuthOutcome::Refuse(self.challenge(proxy, true, "opaque mismatch"));
        }
        let (Some(qop), Some(nc), Some(cnonce)) =
            (p.qop.as_deref(), p.nc.as_deref(), p.cnonce.as_deref())
        else {
            return AuthOutcome::Refuse(self.failure(source, "qop=auth is required".into()));
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return AuthOutcome::Refuse(self.failure(source, format!("unsupported qop {qop}")));
        }
        if !username.eq_ignore_ascii_case(aor_user) {
            return AuthOutcome::Refuse(self.failure(
                source,
                format!("credentials of {username:?} do not match the address {aor_user:?}"),
            ));
        }
        let secret = match store::seat_secret(&self.db, username).await {
            Ok(Some(s)) if !s.seat.disabled => s,
            Ok(_) => {
                // Same answer as a wrong password: do not reveal which seats exist.
                return AuthOutcome::Refuse(self.failure(source, "wrong credentials".into()));
            }
            Err(e) => {
                warn!(error = %e, "seat lookup failed");
                return AuthOutcome::Refuse(Reply::new(
                    StatusCode::ServerInternalError,
                    "database unavailable",
                ));
            }
        };
        if secret.seat.realm != *realm {
            warn!(
                seat = %username,
                seat_realm = %secret.seat.realm,
                %realm,
                "seat password was set for another realm; reset it with `papercup seat passwd`"
            );
            return AuthOutcome::Refuse(self.failure(source, "wrong credentials".into()));
        }
        let method = req.method().to_string();
        let expected = digest::response(
            algorithm,
            secret.ha1(algorithm),
            nonce,
            Some(nc),
            Some(cnonce),
            Some(qop),
            &method,
            uri,
        );
        if !digest::constant_time_eq(expected.as_bytes(), resp.to_ascii_lowercase().as_bytes()) {
            return AuthOutcome::Refuse(self.failure(source, "wrong credentials".into()));
        }
        match self.nonces.check_and_use(nonce, nc) {
            NonceCheck::Fresh => {}
            NonceCheck::Stale => {
                return AuthOutcome::Refuse(self.challenge(proxy, true, "stale nonce"));
            }
            NonceCheck::Replayed => {
                return AuthOutcome::Refuse(
                    self.failure(source, format!("replayed nonce count {nc}")),
                );
            }
        }
        self.abuse.auth_succeeded(source);
        SipMetrics::inc(&self.metrics.auth_successes);
        AuthOutcome::Ok(secret)
    }

    /// Handles one REGISTER received from `source` over `transport`.
    pub async fn register(&self, req: &Request, source: SocketAddr, transport: &str) -> Reply {
        match self.register_inner(req, source, transport).await {
            Ok(r) | Err(r) => r,
        }
    }

    async fn register_inner(
        &self,
        req: &Request,
        source: SocketAddr,
        transport: &str,
    ) -> Result<Reply, Reply> {
        let bad = |why: &str| Reply::new(StatusCode::BadRequest, why.to_string());
        let to_uri = req
            .to_header()
            .and_then(|t| t.uri())
            .map_err(|_| bad("unreadable To header"))?;
        let Some(user) = to_uri.user().map(str::to_string) else {
            return Err(bad("To header has no user part"));
        };
        let secret = match self.authenticate(req, source.ip(), &user, false).await {
            AuthOutcome::Ok(s) => s,
            AuthOutcome::Refuse(r) => return Err(r),
        };
        let call_id = req
            .call_id_header()
            .map(|c| c.value().to_string())
            .map_err(|_| bad("missing Call-ID"))?;
        let cseq = req
            .cseq_header()
            .and_then(|c| c.seq())
            .map_err(|_| bad("unreadable CSeq"))?;
        let mut header_expires = None;
        let mut user_agent = String::new();
        let mut contacts = Vec::new();
        for h in req.headers.iter() {
            match h {
                Header::Expires(e) => {
                    header_expires = Some(
                        e.value()
                            .trim()
                            .parse::<u32>()
                            .map_err(|_| bad("unreadable Expires header"))?,
                    );
                }
                Header::UserAgent(ua) => user_agent = ua.value().to_string(),
                Header::Contact(c) => {
                    let list = rsipstack::sip::typed::Contact::parse_header_list(c.value())
                        .map_err(|e| bad(&format!("unreadable Contact: {e}")))?;
                    contacts.extend(list);
                }
                _ => {}
            }
        }
        let now = storage::now_ms();
        let mut changes = Vec::new();
        let star = contacts.iter().any(|c| c.uri.to_string().trim() == "*");
        if star {
            if contacts.len() != 1 || header_expires != Some(0) {
                return Err(bad("Contact: * needs Expires: 0 and no other contact"));
            }
            changes.push(BindingChange::RemoveAll);
        }
        let source_text = format!("{transport}:{source}");
        for c in contacts.iter().filter(|_| !star) {
            let expires = c
                .expires()
                .or(header_expires)
                .unwrap_or(self.config.default_expires);
            let contact = c.uri.to_string();
            if expires == 0 {
                changes.push(BindingChange::Remove { contact });
                continue;
            }
            if expires < self.config.min_expires {
                let mut r = Reply::new(
                    StatusCode::IntervalTooBrief,
                    format!("expires {expires} below {}", self.config.min_expires),
                );
                r.headers.push(Header::MinExpires(
                    self.config.min_expires.to_string().into(),
                ));
                return Err(r);
            }
            let expires = expires.min(self.config.max_expires);
            changes.push(BindingChange::Upsert(Binding {
                seat_id: secret.seat.id,
                username: secret.seat.username.clone(),
                contact,
                source: source_text.clone(),
                transport: transport.to_string(),
                call_id: call_id.clone(),
                cseq: i64::from(cseq),
                user_agent: user_agent.clone(),
                node_id: self.config.node_id.clone(),
                expires_at: now + i64::from(expires) * 1000,
                registered_at: now,
                updated_at: now,
            }));
        }
        let outcome = store::apply(
            &self.db,
            secret.seat.id,
            &call_id,
            i64::from(cseq),
            &changes,
            now,
        )
        .await
        .map_err(|e| {
            warn!(error = %e, "registration store failed");
            Reply::new(StatusCode::ServerInternalError, "database unavailable")
        })?;
        let live = match outcome {
            ApplyOutcome::Applied(live) => live,
            ApplyOutcome::OutOfOrder { contact } => {
                return Err(Reply::new(
                    StatusCode::ServerInternalError,
                    format!("out-of-order REGISTER for {contact} (same Call-ID, CSeq not higher)"),
                ));
            }
        };
        for c in &changes {
            match c {
                BindingChange::Upsert(b) => {
                    SipMetrics::inc(&self.metrics.registrations);
                    info!(seat = %b.username, contact = %b.contact, source = %b.source, "registered");
                }
                _ => {
                    SipMetrics::inc(&self.metrics.unregistrations);
                    info!(seat = %secret.seat.username, "unregistered");
                }
            }
        }
        let mut reply = Reply::new(StatusCode::OK, "registered");
        for b in &live {
            let left = ((b.expires_at - now).max(0) + 999) / 1000;
            reply.headers.push(Header::Contact(
                format!("<{}>;expires={left}", b.contact).into(),
            ));
        }
        reply.headers.push(Header::Date(httpdate_now().into()));
        Ok(reply)
    }
}

/// RFC 1123 date for the Date header (phones without NTP set their clock from it).
fn httpdate_now() -> String {
    chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_date_shape() {
        let d = super::httpdate_now();
        assert!(d.ends_with(" GMT"), "{d}");
        assert_eq!(d.len(), 29, "{d}");
    }
}
