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
use sip_trunk::store::AttemptDirection::{Inbound, Outbound};
use sip_trunk::store::{Attempt, AttemptDirection};
use sip_trunk::{Health, Number, TrunkSecret, TrunkTransport};
use storage::{now_ms, Db};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, info, warn};

use media::bridge::Side;
use media::codec::Codec;
use media::engine::MediaEngine;
use media::rtp_leg::{RtpLeg, Security};
use media::session::{CallMedia, MediaEvent, MediaReport};
use media::srtp::Suite;

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
    /// This host's media engine: every call's media is anchored here.
    pub media: MediaEngine,
    /// What a phone dials for the echo test (media only, no trunk, no charge).
    pub echo_extension: String,
}

/// Trunks and numbers as last loaded (reloaded on the `trunks` change topic).
#[derive(Debug, Default)]
struct Tables {
    trunks: Vec<TrunkSecret>,
    numbers: HashMap<String, Number>,
    /// Enabled trunks' inbound sources, with the trunk's index in `trunks`.
    sources: Vec<(ipnet::IpNet, usize)>,
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
    Answered(
        CallHandle,
        String,
        Option<sip_trunk::ChannelGuard>,
        Box<CallMedia>,
    ),
    /// Refused (status and reason for the caller).
    Failed(u16, String),
    /// The caller gave up.
    Cancelled,
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

/// A number as `+E164` (carriers and phones send it with or without the `+`).
fn plus(n: &str) -> String {
    if n.starts_with('+') {
        n.to_string()
    } else {
        format!("+{n}")
    }
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
        let sources: Vec<(ipnet::IpNet, usize)> = trunks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.trunk.enabled)
            .flat_map(|(i, t)| t.trunk.inbound_nets().into_iter().map(move |n| (n, i)))
            .collect();
        // Carriers send many calls from few addresses: never rate-limit them.
        self.caller
            .abuse
            .set_extra_exempt(trunks.iter().flat_map(|t| t.trunk.inbound_nets()).collect());
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Tables {
            trunks,
            numbers,
            sources,
        });
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
        let tables = self.tables();
        tables
            .sources
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, i)| tables.trunks[*i].clone())
    }

    fn attempt(
        &self,
        call_id: &str,
        seq: i64,
        direction: AttemptDirection,
        trunk: &str,
        target: &str,
    ) -> Attempt {
        Attempt::start(call_id, seq, &self.cfg.node_id, direction, trunk, target)
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
        if let Some(v) = crate::outbound::header_value(&req.headers, "P-Preferred-Identity") {
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
        let offer = String::from_utf8_lossy(&a.request.body).to_string();
        if dialled == self.cfg.echo_extension {
            self.echo_call(&seat, a, &offer).await;
            return;
        }
        // The phone's media leg first: an offer we cannot use is refused before any
        // money or trunk is involved.
        let engine = self.cfg.media.clone();
        let (leg_a, answer_a) =
            match RtpLeg::answer(&engine, &offer, &engine.config().phone_codecs).await {
                Ok(x) => x,
                Err(e) => {
                    info!(%call_id, seat = %seat.username, error = %e, "call refused: media");
                    let status = media_status(&e);
                    reject(&a, status, &e.to_string());
                    return;
                }
            };
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

        let mut leg_a = Some(leg_a);
        let setup = self
            .route(
                &mut a,
                &mut leg_a,
                &call_id,
                &grant.callee,
                caller_id.as_deref(),
            )
            .await;
        let mut quality = None;
        let (cause, trunk, ended_at) = match setup {
            Setup::Failed(status, reason) => {
                reject(&a, status, &reason);
                (EndCause::NotAnswered, None, now_ms())
            }
            Setup::Cancelled => (EndCause::NotAnswered, None, now_ms()),
            Setup::Answered(b, trunk, channel, media) => {
                let answered_at = now_ms();
                match self.billing.answer(&call_id, answered_at).await {
                    Ok(g) => {
                        if let Some(m) = self.meter() {
                            m.track(g);
                        }
                    }
                    Err(e) => warn!(%call_id, error = %e, "recording the answer failed"),
                }
                let (cause, ended_at, report) =
                    bridge(&mut a, b, (*media, answer_a), &mut credit_rx).await;
                drop(channel);
                quality = serde_json::to_value(report).ok();
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
                quality,
            })
            .await
        {
            Ok(cdr) => {
                info!(%call_id, cause = cause.as_str(), billed_secs = cdr.billable_secs, cost = cdr.cost, "call settled")
            }
            Err(e) => warn!(%call_id, error = %e, "settling a call failed (the janitor will)"),
        }
    }

    /// The echo test: the phone hears itself after a short delay, until it hangs up. No
    /// trunk, no charge.
    async fn echo_call(&self, seat: &Seat, mut a: ServerLeg, offer: &str) {
        let call_id = a.dialog.id().call_id.clone();
        let engine = &self.cfg.media;
        let (leg, answer) = match RtpLeg::answer(engine, offer, &engine.config().phone_codecs).await
        {
            Ok(x) => x,
            Err(e) => {
                reject(&a, 488, &e.to_string());
                return;
            }
        };
        let media = match CallMedia::echo(engine, leg.into()) {
            Ok(m) => m,
            Err(e) => {
                reject(&a, 488, &e.to_string());
                return;
            }
        };
        info!(%call_id, seat = %seat.username, "echo test");
        if a.dialog
            .accept(Some(sdp_headers()), Some(answer.into_bytes()))
            .is_err()
        {
            media.stop().await;
            return;
        }
        let mut media = media;
        let (cause, _) = echo_loop(&mut a, &mut media).await;
        let report = media.stop().await;
        info!(%call_id, cause = cause.as_str(), packets = report.a.packets_received, mos = ?report.a.mos, "echo test ended");
    }

    /// Tries the trunks for `dest` in order until one answers, the caller gives up, a
    /// trunk gives an answer that must not fail over, or the setup time runs out.
    async fn route(
        &self,
        a: &mut ServerLeg,
        leg_a: &mut Option<RtpLeg>,
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
        for (i, (name, why)) in plan.skipped.iter().enumerate() {
            let mut a = self.attempt(call_id, i as i64 + 1, Outbound, name, dest);
            a.end(None, format!("skipped: {}", why.as_str()));
            self.log_attempt(&a).await;
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
        let engine = self.cfg.media.clone();
        let phone_codec = leg_a
            .as_ref()
            .and_then(|l| l.format())
            .map_or(Codec::Pcmu, |f| f.codec);
        let from_user = caller_id.unwrap_or("anonymous").to_string();
        let mut last = (480, format!("no trunk answered for {dest}"));
        let mut ringing_sent = false;
        let first_seq = plan.skipped.len() as i64 + 1;
        for (seq, t) in (first_seq..).zip(plan.candidates.iter()) {
            let tr = &t.trunk;
            let target = tr.provider.request_uri(dest, &tr.host, tr.port);
            let mut attempt = self.attempt(call_id, seq, Outbound, &tr.name, &target);
            let channel = match self.limits.acquire(tr, std::time::Instant::now()) {
                Ok(g) => g,
                Err(s) => {
                    attempt.end(None, format!("skipped: {}", s.as_str()));
                    self.log_attempt(&attempt).await;
                    continue;
                }
            };
            let destination = match crate::probe::resolve(&tr.host, tr.port_or_default()).await {
                Ok(d) => d,
                Err(e) => {
                    attempt.end(None, format!("failed: {e} → next trunk"));
                    self.log_attempt(&attempt).await;
                    last = (503, e.to_string());
                    continue;
                }
            };
            let local = self
                .caller
                .advertised()
                .map_or_else(|| "invalid".to_string(), |a| a.to_string());
            // Our own media leg toward this trunk: its codecs (the phone's first, so the
            // call can pass through untranscoded), SDES-SRTP on secure trunks.
            let security = if tr.srtp {
                Security::Sdes(Suite::Aes128Sha1_80)
            } else {
                Security::None
            };
            let (mut leg_b, offer) = match RtpLeg::offer(
                &engine,
                &trunk_codecs(&tr.codecs, phone_codec),
                security,
            )
            .await
            {
                Ok(x) => x,
                Err(e) => {
                    attempt.end(None, format!("failed: media: {e}"));
                    self.log_attempt(&attempt).await;
                    return Setup::Failed(503, format!("media: {e}"));
                }
            };
            let offer = offer.into_bytes();
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
                    attempt.end(None, format!("failed: {e} → next trunk"));
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
                        Some(Update::EarlyMedia) if !ringing_sent => {
                            // The phone plays its own ringback: the carrier's early media
                            // is not bridged before the answer (see the media issue note).
                            ringing_sent = true;
                            let _ = a.dialog.ringing(None, None);
                        }
                        Some(Update::Answered) => {
                            let sdp = b.remote_sdp().map(|s| String::from_utf8_lossy(&s).to_string()).unwrap_or_default();
                            let started = match (leg_b.set_remote(&sdp), leg_a.take()) {
                                (Ok(_), Some(la)) => CallMedia::bridge(&engine, la.into(), leg_b.into()),
                                (Err(e), _) => Err(e),
                                (Ok(_), None) => Err(media::Error::Negotiation("the phone's leg is gone".into())),
                            };
                            let media = match started {
                                Ok(m) => m,
                                Err(e) => {
                                    warn!(%call_id, trunk = %tr.name, error = %e, "the trunk's answer SDP is unusable");
                                    end_leg(&mut b).await;
                                    attempt.end(Some(200), format!("answered with unusable SDP: {e}"));
                                    self.log_attempt(&attempt).await;
                                    return Setup::Failed(488, format!("{}: {e}", tr.name));
                                }
                            };
                            attempt.end(Some(200), "answered");
                            self.log_attempt(&attempt).await;
                            info!(%call_id, trunk = %tr.name, "answered");
                            return Setup::Answered(b, tr.name.clone(), Some(channel), Box::new(media));
                        }
                        Some(Update::Ended(r)) => break r,
                        Some(_) => {}
                        None => break EndReason::Failed("call task ended".into()),
                    },
                    st = a.states.recv() => match st {
                        Some(DialogState::Terminated(_, _)) | None => {
                            end_leg(&mut b).await;
                            attempt.end(None, "cancelled by the caller");
                            self.log_attempt(&attempt).await;
                            return Setup::Cancelled;
                        }
                        Some(_) => {}
                    },
                    _ = sleep_until(deadline) => {
                        end_leg(&mut b).await;
                        attempt.end(None, "setup timeout");
                        self.log_attempt(&attempt).await;
                        return Setup::Failed(408, format!("no answer within {} s", self.cfg.setup_timeout.as_secs()));
                    }
                }
            };
            drop(channel);
            let status = match &ended {
                EndReason::Rejected(s) => Some(*s),
                _ => None,
            };
            let fails_over = tr.provider.fails_over(status);
            let what = match status {
                Some(s) => format!("rejected {s}"),
                None => ended.to_string(),
            };
            attempt.end(
                status,
                if fails_over {
                    format!("{what} → next trunk")
                } else {
                    what.clone()
                },
            );
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
        let did = plus(a.request.uri.user().unwrap_or_default());
        let mut attempt = self.attempt(&call_id, 1, Inbound, &trunk.trunk.name, &did);
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
        if contacts.is_empty() {
            let why = match seat {
                Some(s) => format!("{did}: seat {s} has no registered phone"),
                None => format!("{did} has no routing target"),
            };
            attempt.end(Some(480), why.clone());
            self.log_attempt(&attempt).await;
            info!(%call_id, %did, reason = %why, "inbound call refused");
            reject(&a, 480, &why);
            return;
        }
        // Media: our leg answers the carrier's offer (its SRTP too); the phones are offered
        // our other leg, the carrier's codec first so that the call can pass through.
        let engine = self.cfg.media.clone();
        let offer = String::from_utf8_lossy(&a.request.body).to_string();
        let (leg_a, answer_a) = match RtpLeg::answer(
            &engine,
            &offer,
            &trunk_codecs(&trunk.trunk.codecs, Codec::Pcmu),
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                let status = media_status(&e);
                attempt.end(Some(status), format!("media: {e}"));
                self.log_attempt(&attempt).await;
                reject(&a, status, &e.to_string());
                return;
            }
        };
        let carrier_codec = leg_a.format().map_or(Codec::Pcmu, |f| f.codec);
        let mut phone_codecs = engine.config().phone_codecs.clone();
        prefer(&mut phone_codecs, carrier_codec);
        let (mut leg_b, offer_b) = match RtpLeg::offer(&engine, &phone_codecs, Security::None).await
        {
            Ok(x) => x,
            Err(e) => {
                attempt.end(Some(503), format!("media: {e}"));
                self.log_attempt(&attempt).await;
                reject(&a, 503, &e.to_string());
                return;
            }
        };
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
                offer: offer_b.clone().into_bytes(),
                ..Default::default()
            };
            match self.caller.place_call(call) {
                Ok(h) => legs.push(h),
                Err(e) => warn!(%call_id, error = %e, "ringing a phone failed"),
            }
        }
        let deadline = Instant::now() + self.cfg.setup_timeout;
        // The phones' legs, polled together; `None` once a leg has ended.
        let mut phones: Vec<Option<CallHandle>> = legs.into_iter().map(Some).collect();
        let mut best: u16 = 480;
        let mut ringing = false;
        enum Event {
            Leg(usize, Option<Update>),
            AllEnded,
            CallerGone,
            Timeout,
        }
        let winner = loop {
            let event = tokio::select! {
                n = std::future::poll_fn(|cx| {
                    for (i, leg) in phones.iter_mut().enumerate() {
                        if let Some(h) = leg {
                            if let std::task::Poll::Ready(u) = h.poll_next(cx) {
                                return std::task::Poll::Ready(Event::Leg(i, u));
                            }
                        }
                    }
                    if phones.iter().all(Option::is_none) {
                        std::task::Poll::Ready(Event::AllEnded)
                    } else {
                        std::task::Poll::Pending
                    }
                }) => n,
                st = a.states.recv() => match st {
                    Some(DialogState::Terminated(..)) | None => Event::CallerGone,
                    Some(_) => continue,
                },
                _ = sleep_until(deadline) => Event::Timeout,
            };
            match event {
                Event::Leg(i, Some(Update::Answered)) => break Some(i),
                Event::Leg(_, Some(Update::Ringing | Update::EarlyMedia)) if !ringing => {
                    ringing = true;
                    let _ = a.dialog.ringing(None, None);
                }
                Event::Leg(i, Some(Update::Ended(r))) => {
                    phones[i] = None;
                    // A busy phone says more than one that is unreachable.
                    if let EndReason::Rejected(s @ (486 | 600 | 603)) = r {
                        best = s;
                    }
                }
                Event::Leg(i, None) => phones[i] = None,
                Event::Leg(..) => {}
                Event::AllEnded => break None,
                Event::CallerGone => {
                    end_legs(&mut phones);
                    attempt.end(Some(487), "cancelled by the caller");
                    self.log_attempt(&attempt).await;
                    return;
                }
                Event::Timeout => {
                    end_legs(&mut phones);
                    attempt.end(Some(480), "no answer");
                    self.log_attempt(&attempt).await;
                    reject(&a, 480, "no answer");
                    return;
                }
            }
        };
        let Some(b) = winner.and_then(|w| phones[w].take()) else {
            attempt.end(Some(best), "no phone answered");
            self.log_attempt(&attempt).await;
            reject(&a, best, "no phone answered");
            return;
        };
        end_legs(&mut phones);
        let mut b = b;
        let sdp = b
            .remote_sdp()
            .map(|s| String::from_utf8_lossy(&s).to_string())
            .unwrap_or_default();
        let media = match leg_b
            .set_remote(&sdp)
            .and_then(|_| CallMedia::bridge(&engine, leg_a.into(), leg_b.into()))
        {
            Ok(m) => m,
            Err(e) => {
                warn!(%call_id, error = %e, "the phone's answer SDP is unusable");
                end_leg(&mut b).await;
                attempt.end(Some(488), format!("phone answered with unusable SDP: {e}"));
                self.log_attempt(&attempt).await;
                reject(&a, 488, &e.to_string());
                return;
            }
        };
        attempt.end(Some(200), "answered");
        self.log_attempt(&attempt).await;
        let (_never_tx, mut never) = mpsc::unbounded_channel();
        let (cause, ended_at, report) = bridge(&mut a, b, (media, answer_a), &mut never).await;
        info!(%call_id, passthrough = report.passthrough, mos = ?report.a.mos, "inbound call media");
        attempt.end(Some(200), format!("answered, ended: {}", cause.as_str()));
        attempt.ended_at = Some(ended_at);
        self.log_attempt(&attempt).await;
    }
}

/// The codecs offered to a trunk: G.711 in the trunk's order, the phone's codec first
/// when the trunk takes it (the call then passes through untranscoded).
fn trunk_codecs(names: &[String], phone: Codec) -> Vec<Codec> {
    let mut codecs: Vec<Codec> = names
        .iter()
        .filter_map(|n| match n.to_ascii_uppercase().as_str() {
            "PCMU" => Some(Codec::Pcmu),
            "PCMA" => Some(Codec::Pcma),
            _ => None,
        })
        .collect();
    if codecs.is_empty() {
        codecs = vec![Codec::Pcmu, Codec::Pcma];
    }
    prefer(&mut codecs, phone);
    codecs
}

/// Moves `codec` to the front of `codecs` if it is there: both legs then share it and the
/// call passes through untranscoded.
fn prefer(codecs: &mut Vec<Codec>, codec: Codec) {
    if let Some(i) = codecs.iter().position(|c| *c == codec) {
        codecs.remove(i);
        codecs.insert(0, codec);
    }
}

/// The status for a call whose media leg could not be set up: 503 when this host is out
/// of ports or sockets, 488 when the offer is the problem.
fn media_status(e: &media::Error) -> u16 {
    match e {
        media::Error::PortsExhausted { .. } | media::Error::Io(_) => 503,
        _ => 488,
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

/// Joins the answered far leg `b` to the caller `a` until either hangs up, the media
/// fails or the credit ends; returns why and when it ended, and the media's figures.
/// `media` is the call's anchored media and our SDP answer for the caller.
async fn bridge(
    a: &mut ServerLeg,
    mut b: CallHandle,
    media: (CallMedia, String),
    credit: &mut mpsc::UnboundedReceiver<i64>,
) -> (EndCause, i64, MediaReport) {
    let (mut media, answer) = media;
    if let Err(e) = a
        .dialog
        .accept(Some(sdp_headers()), Some(answer.into_bytes()))
    {
        warn!(error = %e, "answering the caller failed");
        end_leg(&mut b).await;
        return (
            EndCause::Other("answer_failed".into()),
            now_ms(),
            media.stop().await,
        );
    }
    let (cause, ended) = bridge_loop(a, &mut b, &mut media, credit).await;
    (cause, ended, media.stop().await)
}

/// The echo test's dialog loop: until the phone hangs up or its media fails.
async fn echo_loop(a: &mut ServerLeg, media: &mut CallMedia) -> (EndCause, i64) {
    loop {
        tokio::select! {
            st = a.states.recv() => match st {
                Some(DialogState::Terminated(..)) | None => return (EndCause::Normal, now_ms()),
                Some(DialogState::Updated(_, req, handle)) => {
                    let (status, sdp) = reinvite_answer(media, &req.body).await;
                    tokio::spawn(async move {
                        let _ = handle.respond(status, sdp.is_some().then(sdp_headers), sdp).await;
                    });
                }
                Some(DialogState::Info(_, _, handle)) | Some(DialogState::Options(_, _, handle)) => {
                    tokio::spawn(async move { let _ = handle.reply(StatusCode::OK).await; });
                }
                Some(_) => {}
            },
            ev = media.next_event() => match ev {
                Some(MediaEvent::Failed { reason, .. }) => {
                    info!(%reason, "echo test media failed: hanging up");
                    let _ = a.dialog.bye().await;
                    return (EndCause::Other("media_failed".into()), now_ms());
                }
                Some(MediaEvent::Digit { digit, .. }) => debug!(digit = %digit.digit, "DTMF in the echo test"),
                Some(_) => {}
                None => return (EndCause::Normal, now_ms()),
            },
        }
    }
}

/// Our media leg's answer to a re-INVITE/UPDATE from the caller (hold, resume, refresh):
/// it takes the new SDP and answers for itself (the far leg keeps its stream, the bridge
/// keeps it continuous); an offerless one gets our offer (sendrecv), answered in the ACK.
async fn reinvite_answer(media: &CallMedia, body: &[u8]) -> (StatusCode, Option<Vec<u8>>) {
    if body.is_empty() {
        return match media
            .reoffer(Side::A, media::sdp::Direction::SendRecv)
            .await
        {
            Ok(offer) => (StatusCode::OK, Some(offer.into_bytes())),
            Err(_) => (StatusCode::OK, None),
        };
    }
    match media
        .update_remote(Side::A, String::from_utf8_lossy(body).to_string())
        .await
    {
        Ok(answer) => (StatusCode::OK, Some(answer.into_bytes())),
        Err(e) => {
            info!(error = %e, "re-INVITE refused");
            (StatusCode::NotAcceptableHere, None)
        }
    }
}

async fn bridge_loop(
    a: &mut ServerLeg,
    b: &mut CallHandle,
    media: &mut CallMedia,
    credit: &mut mpsc::UnboundedReceiver<i64>,
) -> (EndCause, i64) {
    // The media task only ends when stopped; should it die anyway, stop listening to it.
    let mut media_alive = true;
    loop {
        tokio::select! {
            st = a.states.recv() => match st {
                Some(DialogState::Terminated(_, reason)) => {
                    let ended = now_ms();
                    debug!(?reason, "caller leg ended");
                    end_leg(b).await;
                    let cause = match reason {
                        TerminatedReason::UacBye => EndCause::Normal,
                        TerminatedReason::Timeout => EndCause::Other("no_ack".into()),
                        _ => EndCause::Normal,
                    };
                    return (cause, ended);
                }
                Some(DialogState::Updated(_, req, handle)) => {
                    let (status, sdp) = reinvite_answer(media, &req.body).await;
                    tokio::spawn(async move {
                        let _ = handle.respond(status, sdp.is_some().then(sdp_headers), sdp).await;
                    });
                }
                Some(DialogState::Info(_, _, handle)) | Some(DialogState::Options(_, _, handle)) => {
                    tokio::spawn(async move { let _ = handle.reply(StatusCode::OK).await; });
                }
                Some(_) => {}
                None => {
                    end_leg(b).await;
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
            ev = media.next_event(), if media_alive => match ev {
                Some(MediaEvent::Failed { side, reason }) => {
                    info!(call_id = %a.dialog.id().call_id, ?side, %reason, "media failed: hanging up");
                    let ended = now_ms();
                    let _ = a.dialog.bye().await;
                    end_leg(b).await;
                    return (EndCause::Other("media_failed".into()), ended);
                }
                Some(MediaEvent::Digit { from, digit }) => {
                    debug!(?from, digit = %digit.digit, ms = digit.duration_ms(), "DTMF");
                }
                Some(_) => {}
                None => media_alive = false,
            },
            d = credit.recv() => if let Some(deadline) = d {
                info!(call_id = %a.dialog.id().call_id, "credit exhausted: hanging up");
                let _ = a
                    .dialog
                    .bye_with_headers(Some(vec![Header::Reason(
                        reason_header(402, "credit exhausted").into(),
                    )]))
                    .await;
                end_leg(b).await;
                return (EndCause::CreditExhausted, deadline);
            },
        }
    }
}

/// Hangs up every leg still in `legs`, in the background.
fn end_legs(legs: &mut [Option<CallHandle>]) {
    for mut h in legs.iter_mut().filter_map(Option::take) {
        tokio::spawn(async move { end_leg(&mut h).await });
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
