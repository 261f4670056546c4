//! Call control: the B2BUA that wires a desk phone's call to a trunk (and a trunk's call
//! to a seat's phones), with billing around it.
//!
//! A desk-phone call: authenticated INVITE → billing authorizes (rate, policy, balance) →
//! caller ID checked against our numbers → `sip-trunk` orders the trunks → each is tried
//! in turn within one setup timeout, failing over on 408/480/503/504 and transport errors
//! (not on 404/486/603) → 18x relayed to the phone → on 200 the phone gets the answer, the
//! meter starts → BYE either way, or the meter's hang-up when credit ends → settled, CDR.
//! Every trunk tried (or skipped, with why) is logged in `call_attempts`.
//!
//! An inbound call: an INVITE from a trunk's allowed source to one of our numbers rings
//! every registered phone of the number's seat at once; the first to answer wins.
//!
//! Media is not anchored yet: SDP passes through unchanged, so RTP flows between the
//! phone and the carrier directly (the media engine will put itself in between).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use billing::{AuthorizeRequest, Billing, BillingError, EndCause, SettleRequest};
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, TerminatedReason};
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::prelude::HeadersExt;
use rsipstack::sip::{Header, Request, StatusCode, Transport};
use sip_trunk::routing::{self, Limits};
use sip_trunk::store::{Attempt, AttemptDirection};
use sip_trunk::{Health, Number, TrunkSecret, TrunkTransport};
use storage::Db;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use crate::call::{EndReason, Update};
use crate::outbound::{CallHandle, Caller, OutboundCall};
use crate::store::Seat;

/// Call control settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// This host (written on attempts and reservations).
    pub node_id: String,
    /// How long a call may take to be answered, over every trunk tried.
    pub setup_timeout: Duration,
}

/// Trunks and numbers as last loaded (reloaded on the `trunks` change topic).
#[derive(Debug, Default)]
struct Tables {
    trunks: Vec<TrunkSecret>,
    numbers: HashMap<String, Number>,
}

/// The calls of this host and what they need: routing tables, limits, billing.
pub struct CallControl {
    caller: Caller,
    db: Db,
    billing: Billing,
    /// Taken at shutdown (the meter task ends when its last handle drops).
    meter: Mutex<Option<billing::meter::MeterHandle>>,
    cfg: ControlConfig,
    tables: RwLock<Arc<Tables>>,
    health: RwLock<HashMap<i64, Health>>,
    limits: Arc<Limits>,
    /// Live calls by billing id → their "credit ended at" channel.
    live: Mutex<HashMap<String, mpsc::UnboundedSender<i64>>>,
}

impl std::fmt::Debug for CallControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallControl")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// The caller's side of a call we answer (UAS): the dialog and its events.
pub(crate) struct ServerLeg {
    pub dialog: InviteDialog,
    pub states: DialogStateReceiver,
    pub request: Request,
    pub(crate) _guard: crate::outbound::DialogGuard,
}

/// How setting up the far leg ended.
enum Setup {
    Answered(CallHandle, String, Option<sip_trunk::ChannelGuard>),
    /// Refused (status and reason for the caller).
    Failed(u16, String),
    /// The caller gave up.
    Cancelled,
}

fn now_ms() -> i64 {
    storage::now_ms()
}

/// The user part of a `sip:`/`tel:` URI in a header value (`"A" <sip:+1555@x>;tag=1`).
fn uri_user(value: &str) -> Option<String> {
    let start = value
        .find("sip:")
        .map(|i| i + 4)
        .or_else(|| value.find("sips:").map(|i| i + 5))
        .or_else(|| value.find("tel:").map(|i| i + 4))?;
    let rest = &value[start..];
    let end = rest.find(['@', '>', ';']).unwrap_or(rest.len());
    let user = &rest[..end];
    (!user.is_empty()).then(|| user.to_string())
}

fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(Header::value)
}

fn sdp_headers() -> Vec<Header> {
    vec![Header::ContentType("application/sdp".into())]
}

impl CallControl {
    /// Loads trunks and numbers and starts with every trunk's health unknown.
    pub async fn new(
        caller: Caller,
        db: Db,
        billing: Billing,
        meter: billing::meter::MeterHandle,
        cfg: ControlConfig,
    ) -> Result<Arc<Self>, sip_trunk::TrunkError> {
        let c = Arc::new(Self {
            caller,
            db,
            billing,
            meter: Mutex::new(Some(meter)),
            cfg,
            tables: RwLock::new(Arc::default()),
            health: RwLock::new(HashMap::new()),
            limits: Arc::new(Limits::default()),
            live: Mutex::new(HashMap::new()),
        });
        c.reload().await?;
        Ok(c)
    }

    fn meter(&self) -> Option<billing::meter::MeterHandle> {
        self.meter.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lets go of the meter at shutdown, so its task can end.
    pub fn close(&self) {
        self.meter.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Reloads trunks and numbers (on the `trunks` change topic); returns their counts.
    pub async fn reload(&self) -> Result<(usize, usize), sip_trunk::TrunkError> {
        let trunks = sip_trunk::store::secrets(&self.db).await?;
        let numbers = sip_trunk::store::numbers(&self.db)
            .await?
            .into_iter()
            .map(|n| (n.e164.clone(), n))
            .collect::<HashMap<_, _>>();
        let counts = (trunks.len(), numbers.len());
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Tables { trunks, numbers });
        self.caller.abuse.set_extra_exempt(self.trunk_sources());
        Ok(counts)
    }

    fn tables(&self) -> Arc<Tables> {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// This host's view of a trunk, from its health checks.
    pub fn set_health(&self, trunk_id: i64, health: Health) {
        self.health
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(trunk_id, health);
    }

    fn health_of(&self, trunk_id: i64) -> Health {
        self.health
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&trunk_id)
            .copied()
            .unwrap_or(Health::Unknown)
    }

    /// The meter says a call's credit ended at `deadline`: hang it up.
    pub fn credit_exhausted(&self, call_id: &str, deadline: i64) {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match live.get(call_id) {
            Some(tx) => {
                let _ = tx.send(deadline);
            }
            None => debug!(%call_id, "credit ended for a call no longer here"),
        }
    }

    /// Live calls on this host.
    pub fn live_calls(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The trunk whose inbound allow-list contains `ip`, if any (enabled trunks only).
    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<TrunkSecret> {
        self.tables()
            .trunks
            .iter()
            .find(|t| {
                t.trunk.enabled
                    && t.trunk.inbound_sources.iter().any(|s| {
                        s.parse::<ipnet::IpNet>()
                            .map(|n| n.contains(&ip))
                            .or_else(|_| s.parse::<IpAddr>().map(|a| a == ip))
                            .unwrap_or(false)
                    })
            })
            .cloned()
    }

    /// The addresses of every trunk's inbound sources (exempt from the abuse guard's
    /// request rate: a carrier sends many calls from few addresses).
    pub fn trunk_sources(&self) -> Vec<ipnet::IpNet> {
        self.tables()
            .trunks
            .iter()
            .flat_map(|t| t.trunk.inbound_sources.clone())
            .filter_map(|s| {
                s.parse::<ipnet::IpNet>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
            })
            .collect()
    }

    async fn log_attempt(&self, a: &Attempt) {
        if let Err(e) = sip_trunk::store::record_attempt(&self.db, a).await {
            warn!(call_id = %a.call_id, error = %e, "recording a call attempt failed");
        }
    }

    /// The caller ID a seat presents: the number in `P-Preferred-Identity` (which must be
    /// ours), else the number routed to the seat, else none (anonymous).
    fn caller_id(&self, seat: &Seat, req: &Request) -> Result<Option<String>, String> {
        let tables = self.tables();
        if let Some(v) = header(req, "P-Preferred-Identity") {
            let n =
                uri_user(v).ok_or_else(|| format!("P-Preferred-Identity {v:?} has no number"))?;
            let n = if n.starts_with('+') {
                n
            } else {
                format!("+{n}")
            };
            return if tables.numbers.contains_key(&n) {
                Ok(Some(n))
            } else {
                Err(format!("caller ID {n} is not one of our numbers"))
            };
        }
        let target = format!("seat:{}", seat.username);
        let mut own: Vec<&Number> = tables
            .numbers
            .values()
            .filter(|n| n.target == target)
            .collect();
        own.sort_by(|a, b| a.e164.cmp(&b.e164));
        Ok(own.first().map(|n| n.e164.clone()))
    }

    /// A desk phone's call, from the authenticated INVITE to the settlement.
    pub(crate) async fn seat_call(self: Arc<Self>, seat: Seat, mut a: ServerLeg) {
        let call_id = a.dialog.id().call_id.clone();
        let dialled = a.request.uri.user().unwrap_or_default().to_string();
        let caller_id = match self.caller_id(&seat, &a.request) {
            Ok(c) => c,
            Err(reason) => {
                info!(%call_id, seat = %seat.username, %reason, "call refused");
                reject(&a, 403, &reason);
                return;
            }
        };
        let grant = match self
            .billing
            .authorize(AuthorizeRequest {
                call_id: call_id.clone(),
                wallet_id: seat.wallet_id,
                caller: caller_id.clone().unwrap_or_default(),
                callee: dialled.clone(),
            })
            .await
        {
            Ok(g) => g,
            Err(BillingError::Refused(r)) => {
                info!(%call_id, seat = %seat.username, %dialled, reason = %r, "call refused");
                reject(&a, r.sip_status(), &r.to_string());
                return;
            }
            Err(e) => {
                warn!(%call_id, error = %e, "authorizing a call failed");
                reject(&a, 503, "billing unavailable, try again");
                return;
            }
        };
        if let Some(m) = self.meter() {
            m.track(grant.clone());
        }
        info!(%call_id, seat = %seat.username, to = %grant.callee, caller_id = ?caller_id, "call authorized");
        let (credit_tx, mut credit_rx) = mpsc::unbounded_channel();
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call_id.clone(), credit_tx);

        let setup = self
            .route(&mut a, &call_id, &grant.callee, caller_id.as_deref())
            .await;
        let (cause, trunk, ended_at) = match setup {
            Setup::Failed(status, reason) => {
                reject(&a, status, &reason);
                (EndCause::NotAnswered, None, now_ms())
            }
            Setup::Cancelled => (EndCause::NotAnswered, None, now_ms()),
            Setup::Answered(b, trunk, channel) => {
                let answered_at = now_ms();
                match self.billing.answer(&call_id, answered_at).await {
                    Ok(g) => {
                        if let Some(m) = self.meter() {
                            m.track(g);
                        }
                    }
                    Err(e) => warn!(%call_id, error = %e, "recording the answer failed"),
                }
                let (cause, ended_at) = bridge(&mut a, b, &mut credit_rx).await;
                drop(channel);
                (cause, Some(trunk), ended_at)
            }
        };
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&call_id);
        if let Some(m) = self.meter() {
            m.remove(&call_id);
        }
        match self
            .billing
            .settle(SettleRequest {
                call_id: call_id.clone(),
                ended_at,
                cause: cause.clone(),
                trunk,
                quality: None,
            })
            .await
        {
            Ok(cdr) => {
                info!(%call_id, cause = cause.as_str(), billed_secs = cdr.billable_secs, cost = cdr.cost, "call settled")
            }
            Err(e) => warn!(%call_id, error = %e, "settling a call failed (the janitor will)"),
        }
    }

    /// Tries the trunks for `dest` in order until one answers, the caller gives up, a
    /// trunk gives an answer that must not fail over, or the setup time runs out.
    async fn route(
        &self,
        a: &mut ServerLeg,
        call_id: &str,
        dest: &str,
        caller_id: Option<&str>,
    ) -> Setup {
        let tables = self.tables();
        let plan = routing::plan(
            &tables.trunks,
            dest,
            caller_id,
            |id| self.health_of(id),
            &mut rand::rng(),
        );
        let at = now_ms();
        for (i, (name, why)) in plan.skipped.iter().enumerate() {
            self.log_attempt(&Attempt {
                call_id: call_id.to_string(),
                seq: i as i64 + 1,
                node_id: self.cfg.node_id.clone(),
                direction: AttemptDirection::Outbound,
                trunk: name.clone(),
                target: dest.to_string(),
                started_at: at,
                ended_at: Some(at),
                status: None,
                outcome: format!("skipped: {}", why.as_str()),
            })
            .await;
        }
        if plan.candidates.is_empty() {
            let why = if plan.skipped.is_empty() {
                format!("no trunk carries {dest}")
            } else if plan
                .skipped
                .iter()
                .all(|(_, s)| *s == sip_trunk::Skip::CallerId)
            {
                return Setup::Failed(
                    403,
                    format!(
                        "caller ID {} may not be presented on any trunk to {dest}",
                        caller_id.unwrap_or("(anonymous)")
                    ),
                );
            } else {
                format!("no trunk available for {dest}")
            };
            return Setup::Failed(480, why);
        }
        let deadline = Instant::now() + self.cfg.setup_timeout;
        let offer = a.request.body.clone();
        let from_user = caller_id.unwrap_or("anonymous").to_string();
        let mut last = (480, format!("no trunk answered for {dest}"));
        let mut ringing_sent = false;
        let first_seq = plan.skipped.len() as i64 + 1;
        for (seq, t) in (first_seq..).zip(plan.candidates.iter()) {
            let tr = &t.trunk;
            let mut attempt = Attempt {
                call_id: call_id.to_string(),
                seq,
                node_id: self.cfg.node_id.clone(),
                direction: AttemptDirection::Outbound,
                trunk: tr.name.clone(),
                target: tr.provider.request_uri(dest, &tr.host, tr.port),
                started_at: now_ms(),
                ended_at: None,
                status: None,
                outcome: String::new(),
            };
            let channel = match self.limits.acquire(tr, std::time::Instant::now()) {
                Ok(g) => g,
                Err(s) => {
                    attempt.ended_at = Some(now_ms());
                    attempt.outcome = format!("skipped: {}", s.as_str());
                    self.log_attempt(&attempt).await;
                    continue;
                }
            };
            let destination = match resolve(&tr.host, tr.port_or_default()).await {
                Ok(d) => d,
                Err(e) => {
                    attempt.ended_at = Some(now_ms());
                    attempt.outcome = format!("failed: {e} → next trunk");
                    self.log_attempt(&attempt).await;
                    last = (503, e);
                    continue;
                }
            };
            let local = self
                .caller
                .advertised()
                .map_or_else(|| "invalid".to_string(), |a| a.to_string());
            let call = OutboundCall {
                target: attempt.target.clone(),
                destination: Some(destination),
                from: format!("sip:{from_user}@{local}"),
                offer: offer.clone(),
                credential: (!tr.username.is_empty())
                    .then(|| (tr.username.clone(), t.password.clone())),
                headers: Vec::new(),
                transport: match tr.transport {
                    TrunkTransport::Udp => Transport::Udp,
                    TrunkTransport::Tcp => Transport::Tcp,
                    TrunkTransport::Tls => Transport::Tls,
                },
            };
            self.log_attempt(&attempt).await;
            info!(%call_id, trunk = %tr.name, target = %attempt.target, "trying trunk");
            let mut b = match self.caller.place_call(call) {
                Ok(b) => b,
                Err(e) => {
                    attempt.ended_at = Some(now_ms());
                    attempt.outcome = format!("failed: {e} → next trunk");
                    self.log_attempt(&attempt).await;
                    last = (503, e.to_string());
                    continue;
                }
            };
            let ended = loop {
                tokio::select! {
                    u = b.next() => match u {
                        Some(Update::Ringing) if !ringing_sent => {
                            ringing_sent = true;
                            let _ = a.dialog.ringing(None, None);
                        }
                        Some(Update::EarlyMedia) => {
                            let sdp = b.remote_sdp();
                            let _ = a.dialog.ringing(sdp.is_some().then(sdp_headers), sdp);
                            ringing_sent = true;
                        }
                        Some(Update::Answered) => {
                            attempt.ended_at = Some(now_ms());
                            attempt.status = Some(200);
                            attempt.outcome = "answered".into();
                            self.log_attempt(&attempt).await;
                            info!(%call_id, trunk = %tr.name, "answered");
                            return Setup::Answered(b, tr.name.clone(), Some(channel));
                        }
                        Some(Update::Ended(r)) => break r,
                        Some(_) => {}
                        None => break EndReason::Failed("call task ended".into()),
                    },
                    st = a.states.recv() => match st {
                        Some(DialogState::Terminated(_, _)) | None => {
                            end_leg(&mut b).await;
                            attempt.ended_at = Some(now_ms());
                            attempt.outcome = "cancelled by the caller".into();
                            self.log_attempt(&attempt).await;
                            return Setup::Cancelled;
                        }
                        Some(_) => {}
                    },
                    _ = sleep_until(deadline) => {
                        end_leg(&mut b).await;
                        attempt.ended_at = Some(now_ms());
                        attempt.outcome = "setup timeout".into();
                        self.log_attempt(&attempt).await;
                        return Setup::Failed(408, format!("no answer within {} s", self.cfg.setup_timeout.as_secs()));
                    }
                }
            };
            drop(channel);
            attempt.ended_at = Some(now_ms());
            let status = match &ended {
                EndReason::Rejected(s) => Some(*s),
                _ => None,
            };
            attempt.status = status;
            let fails_over = tr.provider.fails_over(status);
            let what = match status {
                Some(s) => format!("rejected {s}"),
                None => ended.to_string(),
            };
            attempt.outcome = if fails_over {
                format!("{what} → next trunk")
            } else {
                what.clone()
            };
            self.log_attempt(&attempt).await;
            info!(%call_id, trunk = %tr.name, outcome = %attempt.outcome, "trunk attempt ended");
            if !fails_over {
                let s = status.unwrap_or(500);
                return Setup::Failed(s, format!("{} answered {what}", tr.name));
            }
            last = (status.unwrap_or(503), format!("{} {what}", tr.name));
        }
        // Every candidate failed over: the caller hears the last carrier's answer (503 for
        // transport failures: no carrier was reachable).
        Setup::Failed(last.0, format!("all trunks failed, last: {}", last.1))
    }

    /// A call from a trunk: to one of our numbers (else 404), ringing every registered
    /// phone of the number's seat.
    pub(crate) async fn trunk_call(self: Arc<Self>, trunk: TrunkSecret, mut a: ServerLeg) {
        let call_id = a.dialog.id().call_id.clone();
        let did_raw = a.request.uri.user().unwrap_or_default().to_string();
        let did = if did_raw.starts_with('+') {
            did_raw.clone()
        } else {
            format!("+{did_raw}")
        };
        let mut attempt = Attempt {
            call_id: call_id.clone(),
            seq: 1,
            node_id: self.cfg.node_id.clone(),
            direction: AttemptDirection::Inbound,
            trunk: trunk.trunk.name.clone(),
            target: did.clone(),
            started_at: now_ms(),
            ended_at: None,
            status: None,
            outcome: String::new(),
        };
        let number = self.tables().numbers.get(&did).cloned();
        let Some(number) = number else {
            info!(%call_id, trunk = %trunk.trunk.name, %did, "inbound call to a number not ours: 404");
            reject(&a, 404, &format!("{did} is not a number of ours"));
            return;
        };
        let seat = number.target.strip_prefix("seat:").map(str::to_string);
        // Phones registered through this host (their NAT pinholes and connections are
        // here); ringing phones of other hosts comes with scale-out.
        let contacts: Vec<(String, Option<SocketAddr>)> = match &seat {
            Some(s) => crate::store::bindings(&self.db, Some(s), now_ms())
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|b| b.node_id == self.cfg.node_id)
                .map(|b| {
                    let addr = b
                        .source
                        .strip_prefix("udp:")
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    (b.contact, addr)
                })
                .collect(),
            None => Vec::new(),
        };
        let finish = |attempt: &mut Attempt, status: u16, outcome: String| {
            attempt.ended_at = Some(now_ms());
            attempt.status = Some(status);
            attempt.outcome = outcome;
        };
        if contacts.is_empty() {
            let why = match seat {
                Some(s) => format!("{did}: seat {s} has no registered phone"),
                None => format!("{did} has no routing target"),
            };
            finish(&mut attempt, 480, why.clone());
            self.log_attempt(&attempt).await;
            info!(%call_id, %did, reason = %why, "inbound call refused");
            reject(&a, 480, &why);
            return;
        }
        self.log_attempt(&attempt).await;
        info!(%call_id, trunk = %trunk.trunk.name, %did, phones = contacts.len(), "inbound call");
        let from = a
            .request
            .from_header()
            .ok()
            .and_then(|f| f.uri().ok())
            .map_or_else(|| "sip:anonymous@invalid".to_string(), |u| u.to_string());
        let mut legs = Vec::new();
        for (contact, source) in contacts {
            let call = OutboundCall {
                target: contact,
                destination: source,
                from: from.clone(),
                offer: a.request.body.clone(),
                ..Default::default()
            };
            match self.caller.place_call(call) {
                Ok(h) => legs.push(h),
                Err(e) => warn!(%call_id, error = %e, "ringing a phone failed"),
            }
        }
        let deadline = Instant::now() + self.cfg.setup_timeout;
        let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Update)>();
        let (cmd_txs, tasks): (Vec<_>, Vec<_>) = legs
            .into_iter()
            .enumerate()
            .map(|(i, mut h)| {
                let tx = tx.clone();
                let (ctx, mut crx) =
                    mpsc::unbounded_channel::<Option<tokio::sync::oneshot::Sender<CallHandle>>>();
                let task = tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            u = h.next() => match u {
                                Some(u) => {
                                    let end = matches!(u, Update::Ended(_));
                                    let _ = tx.send((i, u));
                                    if end { return; }
                                }
                                None => return,
                            },
                            c = crx.recv() => match c {
                                // Hand the winning leg over to the bridge.
                                Some(Some(back)) => { let _ = back.send(h); return; }
                                Some(None) | None => {
                                    end_leg(&mut h).await;
                                    return;
                                }
                            }
                        }
                    }
                });
                (ctx, task)
            })
            .unzip();
        drop(tx);
        let mut ended = 0;
        let total = cmd_txs.len();
        let mut best: u16 = 480;
        let mut ringing = false;
        let winner = loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some((i, Update::Answered)) => break Some(i),
                    Some((_, Update::Ringing | Update::EarlyMedia)) if !ringing => {
                        ringing = true;
                        let _ = a.dialog.ringing(None, None);
                    }
                    Some((_, Update::Ended(r))) => {
                        ended += 1;
                        if let EndReason::Rejected(s) = r {
                            // A busy phone says more than one that is unreachable.
                            if s == 486 || s == 600 || s == 603 { best = s; }
                        }
                        if ended == total { break None; }
                    }
                    Some(_) => {}
                    None => break None,
                },
                st = a.states.recv() => if matches!(st, Some(DialogState::Terminated(..)) | None) {
                    for c in &cmd_txs { let _ = c.send(None); }
                    finish(&mut attempt, 487, "cancelled by the caller".into());
                    self.log_attempt(&attempt).await;
                    return;
                },
                _ = sleep_until(deadline) => {
                    for c in &cmd_txs { let _ = c.send(None); }
                    finish(&mut attempt, 480, "no answer".into());
                    self.log_attempt(&attempt).await;
                    reject(&a, 480, "no answer");
                    return;
                }
            }
        };
        let Some(w) = winner else {
            finish(&mut attempt, best, "no phone answered".into());
            self.log_attempt(&attempt).await;
            reject(&a, best, "no phone answered");
            return;
        };
        for (i, c) in cmd_txs.iter().enumerate() {
            if i != w {
                let _ = c.send(None);
            }
        }
        let (back_tx, back_rx) = tokio::sync::oneshot::channel();
        let _ = cmd_txs[w].send(Some(back_tx));
        let Ok(b) = back_rx.await else {
            reject(&a, 500, "answered leg lost");
            return;
        };
        drop(tasks);
        finish(&mut attempt, 200, "answered".into());
        self.log_attempt(&attempt).await;
        let (_never_tx, mut never) = mpsc::unbounded_channel();
        let (cause, ended_at) = bridge(&mut a, b, &mut never).await;
        attempt.ended_at = Some(ended_at);
        attempt.outcome = format!("answered, ended: {}", cause.as_str());
        self.log_attempt(&attempt).await;
    }
}

/// Answers the caller with a final refusal, the reason in `Warning` (phones show it).
fn reject(a: &ServerLeg, status: u16, reason: &str) {
    let _ = a.dialog.reject(
        Some(StatusCode::from(status)),
        Some(reason_header(status, reason)),
    );
}

/// `Reason` header value (RFC 3326) carrying our text.
fn reason_header(status: u16, reason: &str) -> String {
    format!(
        "SIP;cause={status};text=\"{}\"",
        reason.replace(['"', '\r', '\n'], "'")
    )
}

/// Resolves a trunk's host (A/AAAA; an IP passes through).
async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

/// Joins the answered far leg `b` to the caller `a` until either hangs up or the credit
/// ends; returns why and when it ended.
async fn bridge(
    a: &mut ServerLeg,
    mut b: CallHandle,
    credit: &mut mpsc::UnboundedReceiver<i64>,
) -> (EndCause, i64) {
    let answer = b.remote_sdp();
    if let Err(e) = a
        .dialog
        .accept(answer.is_some().then(sdp_headers), answer.clone())
    {
        warn!(error = %e, "answering the caller failed");
        end_leg(&mut b).await;
        return (EndCause::Other("answer_failed".into()), now_ms());
    }
    loop {
        tokio::select! {
            st = a.states.recv() => match st {
                Some(DialogState::Terminated(_, reason)) => {
                    let ended = now_ms();
                    debug!(?reason, "caller leg ended");
                    end_leg(&mut b).await;
                    let cause = match reason {
                        TerminatedReason::UacBye => EndCause::Normal,
                        TerminatedReason::Timeout => EndCause::Other("no_ack".into()),
                        _ => EndCause::Normal,
                    };
                    return (cause, ended);
                }
                Some(DialogState::Updated(_, _, handle)) => {
                    // A re-INVITE/UPDATE from the phone (hold, refresh): answered with the
                    // far end's current SDP; media is not anchored yet.
                    let sdp = b.remote_sdp();
                    tokio::spawn(async move {
                        let _ = handle.respond(StatusCode::OK, sdp.is_some().then(sdp_headers), sdp).await;
                    });
                }
                Some(DialogState::Info(_, _, handle)) | Some(DialogState::Options(_, _, handle)) => {
                    tokio::spawn(async move { let _ = handle.reply(StatusCode::OK).await; });
                }
                Some(_) => {}
                None => {
                    end_leg(&mut b).await;
                    return (EndCause::Normal, now_ms());
                }
            },
            u = b.next() => match u {
                Some(Update::Ended(r)) => {
                    let ended = now_ms();
                    debug!(reason = %r, "far leg ended");
                    if let Err(e) = a.dialog.bye().await {
                        debug!(error = %e, "BYE to the caller failed");
                    }
                    return (EndCause::Normal, ended);
                }
                Some(_) => {}
                None => {
                    let _ = a.dialog.bye().await;
                    return (EndCause::Normal, now_ms());
                }
            },
            d = credit.recv() => if let Some(deadline) = d {
                info!(call_id = %a.dialog.id().call_id, "credit exhausted: hanging up");
                let _ = a
                    .dialog
                    .bye_with_headers(Some(vec![Header::Reason(
                        reason_header(402, "credit exhausted").into(),
                    )]))
                    .await;
                end_leg(&mut b).await;
                return (EndCause::CreditExhausted, deadline);
            },
        }
    }
}

/// Hangs a leg up (CANCEL before an answer, BYE after; an answer crossing the CANCEL is
/// hung up too) and waits, bounded, until it has ended.
async fn end_leg(b: &mut CallHandle) {
    b.hangup();
    let wait = async {
        while let Some(u) = b.next().await {
            match u {
                Update::Answered => b.hangup(),
                Update::Ended(_) => break,
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(40), wait).await;
}
