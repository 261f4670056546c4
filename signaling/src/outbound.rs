//! Placing a call (we are the caller, toward a trunk or any SIP peer): the I/O driver of
//! [`crate::call::CallMachine`] on rsipstack's dialog layer.
//!
//! rsipstack sends the INVITE, answers 401/407 with our credentials, ACKs the 2xx toward
//! its Contact through the Record-Route set and re-ACKs every retransmitted 2xx, and when a
//! 2xx crosses our CANCEL it ACKs and BYEs it. We add what it leaves to the application:
//! answering re-INVITE/UPDATE (hold → `recvonly`, `inactive` → `inactive`), session timers
//! (RFC 4028: 422 below Min-SE, our own refreshes when we are the refresher, BYE when the
//! far end stops refreshing), and removal of the dialog whatever way the call ends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rsipstack::dialog::authenticate::Credential;
use rsipstack::dialog::dialog::{DialogState, TerminatedReason, TransactionHandle};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invitation::InviteOption;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::dialog::DialogId;
use rsipstack::sip::{Header, Method, Request, Response, StatusCode, Transport};
use rsipstack::transport::SipAddr;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{debug, warn};

use crate::call::{CallMachine, EndReason, Input, Output, Update};
use crate::metrics::SipMetrics;
use crate::sdp::{self, Direction};
use crate::session_timer::{self, SessionTimer};
use crate::SipServer;

/// What to call and how.
#[derive(Debug, Clone)]
pub struct OutboundCall {
    /// Request-URI, e.g. `sip:+442071234567@trunk.example.com`.
    pub target: String,
    /// Where to send it (else resolved from the URI).
    pub destination: Option<SocketAddr>,
    /// From URI.
    pub from: String,
    /// Our SDP offer (from the media engine).
    pub offer: Vec<u8>,
    /// Digest credentials for 401/407 (trunk credential lists).
    pub credential: Option<(String, String)>,
    /// Extra headers (P-Asserted-Identity, …).
    pub headers: Vec<Header>,
    /// Transport toward `destination` (UDP unless the trunk says otherwise).
    pub transport: Transport,
}

impl Default for OutboundCall {
    fn default() -> Self {
        Self {
            target: String::new(),
            destination: None,
            from: String::new(),
            offer: Vec::new(),
            credential: None,
            headers: Vec::new(),
            transport: Transport::Udp,
        }
    }
}

/// Commands to a live call.
#[derive(Debug)]
enum Command {
    Hangup,
}

/// The application's end of a call: updates in order, and hang-up.
#[derive(Debug)]
pub struct CallHandle {
    pub call_id: String,
    updates: mpsc::UnboundedReceiver<Update>,
    commands: mpsc::UnboundedSender<Command>,
    remote_sdp: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl CallHandle {
    /// The far end's latest SDP (from a 183 or the 2xx), once one came.
    pub fn remote_sdp(&self) -> Option<Vec<u8>> {
        self.remote_sdp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The next update (`None` after `Ended`).
    pub async fn next(&mut self) -> Option<Update> {
        self.updates.recv().await
    }

    /// Polls for the next update (to wait on several calls at once).
    pub fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Update>> {
        self.updates.poll_recv(cx)
    }

    /// Hang up: CANCEL before an answer, BYE after.
    pub fn hangup(&self) {
        let _ = self.commands.send(Command::Hangup);
    }
}

/// Removes the dialog from the layer and decrements the gauge, however the task ends.
pub(crate) struct DialogGuard {
    layer: Arc<DialogLayer>,
    ids: Vec<DialogId>,
    metrics: Arc<SipMetrics>,
}

impl DialogGuard {
    /// Counts a new dialog (call) until the guard drops.
    pub(crate) fn new(layer: Arc<DialogLayer>, id: DialogId, metrics: Arc<SipMetrics>) -> Self {
        metrics.active_dialogs.fetch_add(1, Ordering::Relaxed);
        SipMetrics::inc(&metrics.calls_started);
        Self {
            layer,
            ids: vec![id],
            metrics,
        }
    }
}

impl Drop for DialogGuard {
    fn drop(&mut self) {
        for id in &self.ids {
            self.layer.remove_dialog(id);
        }
        self.metrics.active_dialogs.fetch_sub(1, Ordering::Relaxed);
        SipMetrics::inc(&self.metrics.calls_ended);
    }
}

/// The value of the first header called `name` (any case; typed or not).
pub(crate) fn header_value<'a>(
    headers: &'a rsipstack::sip::Headers,
    name: &str,
) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(Header::value)
}

fn allows_update(resp: &Response) -> bool {
    resp.headers.iter().any(|h| match h {
        Header::Allow(v) => v
            .value()
            .split(',')
            .any(|m| m.trim().eq_ignore_ascii_case("UPDATE")),
        _ => false,
    })
}

/// What placing calls needs of the SIP core, cheap to clone (call control keeps one).
#[derive(Clone)]
pub struct Caller {
    pub(crate) dialogs: Arc<DialogLayer>,
    pub(crate) metrics: Arc<SipMetrics>,
    pub(crate) config: Arc<crate::SipConfig>,
    pub(crate) abuse: Arc<crate::abuse::AbuseGuard>,
    /// Our UDP listener.
    pub(crate) local: Option<SocketAddr>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl SipServer {
    /// Places a call; its progress arrives on the returned handle.
    pub fn place_call(&self, call: OutboundCall) -> Result<CallHandle, crate::SipError> {
        self.caller().place_call(call)
    }
}

/// The address advertised for the listener `local` in Contact and Via: the public one
/// behind 1:1 NAT.
pub(crate) fn advertised(config: &crate::SipConfig, local: SocketAddr) -> SocketAddr {
    config
        .public_ip
        .map_or(local, |ip| SocketAddr::new(ip, local.port()))
}

impl Caller {
    /// The address we advertise in Contact and Via (the public one behind 1:1 NAT).
    pub fn advertised(&self) -> Option<SocketAddr> {
        Some(advertised(&self.config, self.local?))
    }

    /// Places a call; its progress arrives on the returned handle.
    pub fn place_call(&self, call: OutboundCall) -> Result<CallHandle, crate::SipError> {
        let bad =
            |what: &str, e: rsipstack::sip::Error| crate::SipError::Stack(format!("{what}: {e}"));
        let callee: rsipstack::sip::Uri = call
            .target
            .as_str()
            .try_into()
            .map_err(|e| bad("target", e))?;
        let caller: rsipstack::sip::Uri =
            call.from.as_str().try_into().map_err(|e| bad("from", e))?;
        let advertised = self
            .advertised()
            .ok_or_else(|| crate::SipError::Stack("no UDP listener to call from".into()))?;
        let user = caller.user().unwrap_or("papercup").to_string();
        let contact: rsipstack::sip::Uri = format!("sip:{user}@{advertised}")
            .as_str()
            .try_into()
            .map_err(|e| bad("contact", e))?;
        let cfg = &self.config;
        let mut headers = vec![
            Header::Supported("timer".into()),
            Header::SessionExpires(format!("{};refresher=uac", cfg.session_expires).into()),
            Header::MinSE(cfg.min_se.to_string().into()),
            Header::Allow(crate::server::ALLOW.into()),
        ];
        headers.extend(call.headers.clone());
        let opt = InviteOption {
            caller,
            callee,
            destination: call.destination.map(|a| SipAddr {
                r#type: Some(call.transport),
                addr: a.into(),
            }),
            content_type: Some("application/sdp".into()),
            offer: Some(call.offer.clone()),
            contact,
            credential: call
                .credential
                .clone()
                .map(|(username, password)| Credential {
                    username,
                    password,
                    realm: None,
                    auth_username: None,
                }),
            headers: Some(headers),
            ..Default::default()
        };
        let (state_tx, state_rx) = self.dialogs.new_dialog_state_channel();
        let (dialog, invite) = self
            .dialogs
            .do_invite_async(opt, state_tx)
            .map_err(|e| crate::SipError::Stack(e.to_string()))?;
        let call_id = dialog.id().call_id.clone();
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let guard = DialogGuard::new(self.dialogs.clone(), dialog.id(), self.metrics.clone());
        let remote_sdp = Arc::new(std::sync::Mutex::new(None));
        let driver = Driver {
            dialog,
            machine: CallMachine::new(),
            updates: up_tx,
            sdp: String::from_utf8_lossy(&call.offer).into_owned(),
            guard,
            deadline: None,
            answered: false,
            min_se: cfg.min_se,
            ended: None,
            remote_sdp: remote_sdp.clone(),
        };
        tokio::spawn(driver.run(state_rx, cmd_rx, invite));
        Ok(CallHandle {
            call_id,
            updates: up_rx,
            commands: cmd_tx,
            remote_sdp,
        })
    }
}

struct Driver {
    dialog: InviteDialog,
    machine: CallMachine,
    updates: mpsc::UnboundedSender<Update>,
    /// Our current SDP (re-sent unchanged in refreshes, direction adjusted in answers).
    sdp: String,
    guard: DialogGuard,
    deadline: Option<Instant>,
    answered: bool,
    min_se: u32,
    /// Why the call ended, once it has.
    ended: Option<EndReason>,
    /// The far end's SDP, shared with the handle.
    remote_sdp: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

type InviteJoin = tokio::task::JoinHandle<rsipstack::dialog::invitation::InviteAsyncResult>;

impl Driver {
    async fn run(
        mut self,
        mut states: mpsc::UnboundedReceiver<DialogState>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        invite: InviteJoin,
    ) {
        let mut invite = Some(invite);
        let mut pending: Option<(Request, TransactionHandle)> = None;
        loop {
            if self.machine.phase() == crate::call::Phase::Ended {
                break;
            }
            let input = tokio::select! {
                st = states.recv() => match st {
                    Some(st) => match self.translate(st, &mut pending) {
                        Some(i) => i,
                        None => continue,
                    },
                    None => Input::Failed("dialog state channel closed".into()),
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Hangup) | None => Input::LocalHangup,
                },
                res = async { invite.as_mut().expect("guarded by the if").await }, if invite.is_some() => {
                    invite = None;
                    match res {
                        Ok(Ok((id, resp))) => {
                            if !self.guard.ids.contains(&id) {
                                self.guard.ids.push(id);
                            }
                            match resp {
                                Some(r) if r.status_code.kind() != rsipstack::sip::StatusCodeKind::Successful => {
                                    Input::Rejected { status: r.status_code.code() }
                                }
                                // A 2xx: Confirmed carries it, unless it crossed our
                                // CANCEL (then no Confirmed comes).
                                Some(r) if self.answered => { let _ = r; continue }
                                Some(r) => {
                                    self.answered = true;
                                    if !r.body.is_empty() {
                                        self.set_remote_sdp(&r.body);
                                    }
                                    Input::Answered {
                                        session_timer: session_timer::from_answer(header_value(&r.headers, "session-expires")),
                                        peer_allows_update: allows_update(&r),
                                    }
                                }
                                None => Input::Failed("no final response".into()),
                            }
                        }
                        Ok(Err(e)) => Input::Failed(e.to_string()),
                        Err(e) => Input::Failed(e.to_string()),
                    }
                },
                _ = async { sleep_until(self.deadline.expect("guarded by the if")).await }, if self.deadline.is_some() => {
                    self.deadline = None;
                    Input::TimerFired
                },
            };
            let outputs = self.machine.handle(input);
            for o in outputs {
                self.execute(o, &mut pending).await;
            }
        }
        let reason = self
            .ended
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        debug!(call_id = %self.dialog.id().call_id, %reason, "call ended");
    }

    fn set_remote_sdp(&self, body: &[u8]) {
        *self.remote_sdp.lock().unwrap_or_else(|p| p.into_inner()) = Some(body.to_vec());
    }

    fn translate(
        &mut self,
        st: DialogState,
        pending: &mut Option<(Request, TransactionHandle)>,
    ) -> Option<Input> {
        match st {
            DialogState::Early(_, resp) => Some(Input::Provisional {
                early_media: {
                    if !resp.body.is_empty() {
                        self.set_remote_sdp(&resp.body);
                    }
                    !resp.body.is_empty()
                },
                status: resp.status_code.code(),
            }),
            DialogState::Confirmed(id, resp) => {
                if self.answered {
                    return None;
                }
                self.answered = true;
                if !self.guard.ids.contains(&id) {
                    self.guard.ids.push(id);
                }
                if !resp.body.is_empty() {
                    self.set_remote_sdp(&resp.body);
                }
                let timer =
                    session_timer::from_answer(header_value(&resp.headers, "session-expires"));
                Some(Input::Answered {
                    session_timer: timer,
                    peer_allows_update: allows_update(&resp),
                })
            }
            DialogState::Updated(_, req, handle) => {
                let se = header_value(&req.headers, "session-expires").map(str::to_string);
                let timer = session_timer::negotiate_request(se.as_deref(), self.min_se, true);
                let input = if req.body.is_empty() {
                    Input::RemoteRefresh { timer }
                } else {
                    Input::RemoteOffer {
                        direction: sdp::direction(&String::from_utf8_lossy(&req.body)),
                        timer,
                    }
                };
                *pending = Some((req, handle));
                Some(input)
            }
            DialogState::Options(_, _, handle) => {
                tokio::spawn(async move {
                    let _ = handle.reply(StatusCode::OK).await;
                });
                None
            }
            DialogState::Info(_, _, handle) => {
                tokio::spawn(async move {
                    let _ = handle.reply(StatusCode::OK).await;
                });
                None
            }
            DialogState::Terminated(_, reason) => Some(match reason {
                TerminatedReason::UasBye => Input::RemoteBye,
                TerminatedReason::UacBye | TerminatedReason::UacCancel => return None,
                TerminatedReason::Timeout => Input::Failed("timeout".into()),
                TerminatedReason::UasBusy => Input::Rejected { status: 486 },
                TerminatedReason::UasDecline => Input::Rejected { status: 603 },
                TerminatedReason::UasOther(s) | TerminatedReason::ProxyError(s) => {
                    Input::Rejected { status: s.code() }
                }
                TerminatedReason::ProxyAuthRequired => Input::Rejected { status: 407 },
                TerminatedReason::UacBusy => Input::Rejected { status: 486 },
                TerminatedReason::UacOther(s) => Input::Rejected { status: s.code() },
            }),
            _ => None,
        }
    }

    fn timer_headers(timer: Option<SessionTimer>) -> Vec<Header> {
        match timer {
            Some(t) => vec![
                Header::SessionExpires(t.header_value(true).into()),
                Header::Require("timer".into()),
            ],
            None => Vec::new(),
        }
    }

    async fn execute(&mut self, o: Output, pending: &mut Option<(Request, TransactionHandle)>) {
        match o {
            Output::Notify(u) => {
                if let Update::Ended(r) = &u {
                    self.ended = Some(r.clone());
                }
                let _ = self.updates.send(u);
            }
            Output::SendCancel => {
                if let Err(e) = self.dialog.cancel().await {
                    debug!(error = %e, "cancel failed");
                }
            }
            Output::SendBye => {
                if let Err(e) = self.dialog.bye().await {
                    debug!(error = %e, "bye failed");
                }
            }
            Output::AnswerOffer { direction, timer } => {
                if let Some((req, handle)) = pending.take() {
                    let body = sdp::with_direction(&self.sdp, direction, true);
                    self.sdp = sdp::with_direction(&body, Direction::SendRecv, false);
                    let mut headers = vec![Header::ContentType("application/sdp".into())];
                    headers.extend(Self::timer_headers(timer));
                    debug!(method = %req.method, answer = direction.as_str(), "answering offer");
                    if let Err(e) = handle
                        .respond(StatusCode::OK, Some(headers), Some(body.into_bytes()))
                        .await
                    {
                        warn!(error = %e, "answering an in-dialog offer failed");
                    }
                }
            }
            Output::AnswerRefresh { timer } => {
                if let Some((_, handle)) = pending.take() {
                    let _ = handle
                        .respond(StatusCode::OK, Some(Self::timer_headers(timer)), None)
                        .await;
                }
            }
            Output::RejectTooSmall { min_se } => {
                if let Some((_, handle)) = pending.take() {
                    let _ = handle
                        .respond(
                            StatusCode::SessionIntervalTooSmall,
                            Some(vec![Header::MinSE(min_se.to_string().into())]),
                            None,
                        )
                        .await;
                }
            }
            Output::SendRefresh { use_update } => {
                let t = self.machine.session_timer();
                let mut headers = vec![Header::Supported("timer".into())];
                if let Some(t) = t {
                    headers.push(Header::SessionExpires(t.header_value(true).into()));
                }
                let result = if use_update {
                    self.dialog.update(Some(headers), None).await
                } else {
                    headers.push(Header::ContentType("application/sdp".into()));
                    let body = sdp::with_direction(&self.sdp, Direction::SendRecv, true);
                    self.sdp = body.clone();
                    self.dialog
                        .reinvite(Some(headers), Some(body.into_bytes()))
                        .await
                };
                let ok = matches!(&result, Ok(Some(r)) if r.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful);
                debug!(
                    method = if use_update {
                        Method::Update
                    } else {
                        Method::Invite
                    }
                    .to_string(),
                    ok, "session refresh"
                );
                for o in self.machine.handle(Input::RefreshDone { ok }) {
                    Box::pin(self.execute(o, pending)).await;
                }
            }
            Output::ArmTimer(d) => self.deadline = Some(Instant::now() + d),
            Output::DisarmTimer => self.deadline = None,
        }
    }
}
