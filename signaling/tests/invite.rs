//! Papercup as the caller, with sipp playing the far end of the INVITE (a trunk or a
//! phone). Each sipp scenario asserts the exact messages Papercup sends (request lines,
//! Route sets, SDP directions, session-timer headers) and fails on anything unexpected;
//! here we assert what the application sees.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_passed, free_port, server, sipp, SippRun};
use signaling::call::{EndReason, Update};
use signaling::outbound::{CallHandle, OutboundCall};
use signaling::sdp::Direction;

const OFFER: &str = "v=0\r\no=papercup 1 1 IN IP4 127.0.0.1\r\ns=papercup\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

struct Far {
    addr: SocketAddr,
    run: tokio::task::JoinHandle<SippRun>,
}

/// Starts sipp as the far end with `scenario` and waits until it listens.
async fn far_end(scenario: &'static str) -> Far {
    far_end_with(scenario, &[]).await
}

async fn far_end_with(scenario: &'static str, extra: &'static [&'static str]) -> Far {
    far_end_calls(scenario, extra, 1).await
}

async fn far_end_calls(scenario: &'static str, extra: &'static [&'static str], calls: u32) -> Far {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let run = tokio::spawn(async move {
        let p = port.to_string();
        let mp = (port + 2).to_string();
        let m = calls.to_string();
        let mut args = vec!["-i", "127.0.0.1", "-p", &p, "-m", &m, "-mp", &mp];
        args.extend_from_slice(extra);
        sipp(None, scenario, &args, Duration::from_secs(300)).await
    });
    // sipp binds within milliseconds; a UDP bind on its port failing means it is up.
    for _ in 0..100 {
        if std::net::UdpSocket::bind(addr).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Far { addr, run }
}

fn call_to(far: SocketAddr) -> OutboundCall {
    OutboundCall {
        target: format!("sip:+15551234567@{far}"),
        destination: Some(far),
        from: "sip:alice@papercup.invalid".into(),
        offer: OFFER.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// The call's next update; on a timeout, fails with what sipp saw.
async fn next(call: &mut CallHandle, far: &mut Far) -> Update {
    match tokio::time::timeout(Duration::from_secs(15), call.next()).await {
        Ok(Some(u)) => u,
        Ok(None) => panic!("the call ended without saying why"),
        Err(_) => {
            let run = (&mut far.run).await.expect("join");
            panic!(
                "no update in time; sipp errors:\n{}\nmessages:\n{}",
                run.errors, run.messages
            );
        }
    }
}

#[tokio::test]
async fn early_media_then_answer_ack_through_route_set_and_our_bye() {
    let (server, _db) = server(|_| {}).await;
    let mut far = far_end("uas_early_media.xml").await;
    let mut call = server.place_call(call_to(far.addr)).expect("call");
    assert_eq!(next(&mut call, &mut far).await, Update::EarlyMedia);
    assert_eq!(next(&mut call, &mut far).await, Update::Answered);
    tokio::time::sleep(Duration::from_millis(300)).await;
    call.hangup();
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::Ended(EndReason::LocalHangup)
    );
    assert_passed(&far.run.await.expect("join"), "early media");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.metrics().snapshot().active_dialogs, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn sendonly_hold_is_answered_recvonly_then_resume_then_remote_bye() {
    let (server, _db) = server(|_| {}).await;
    let mut far = far_end("uas_hold.xml").await;
    let mut call = server.place_call(call_to(far.addr)).expect("call");
    assert_eq!(next(&mut call, &mut far).await, Update::Answered);
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::RemoteHold(Direction::SendOnly)
    );
    assert_eq!(next(&mut call, &mut far).await, Update::RemoteResume);
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::Ended(EndReason::RemoteHangup)
    );
    assert_passed(&far.run.await.expect("join"), "hold");
    server.shutdown().await;
}

#[tokio::test]
async fn update_and_reinvite_session_refreshes_and_422_below_min_se() {
    let (server, _db) = server(|_| {}).await;
    let mut far = far_end("uas_session_refresh.xml").await;
    let mut call = server.place_call(call_to(far.addr)).expect("call");
    assert_eq!(next(&mut call, &mut far).await, Update::Answered);
    assert_eq!(next(&mut call, &mut far).await, Update::Refreshed);
    assert_eq!(next(&mut call, &mut far).await, Update::Refreshed);
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::Ended(EndReason::RemoteHangup)
    );
    assert_passed(&far.run.await.expect("join"), "session refresh");
    server.shutdown().await;
}

#[tokio::test]
async fn a_retransmitted_200_is_acked_again() {
    let (server, _db) = server(|_| {}).await;
    let mut far = far_end_with("uas_retransmitted_200.xml", &["-nr"]).await;
    let mut call = server.place_call(call_to(far.addr)).expect("call");
    assert_eq!(next(&mut call, &mut far).await, Update::Answered);
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::Ended(EndReason::RemoteHangup)
    );
    let run = far.run.await.expect("join");
    assert_passed(&run, "retransmitted 200");
    let acks = run.messages.matches("\nACK sip:far-end-contact@").count();
    assert_eq!(acks, 2, "one ACK per copy of the 200 OK:\n{}", run.messages);
    server.shutdown().await;
}

#[tokio::test]
async fn cancel_crossing_200_sends_ack_then_bye() {
    let (server, _db) = server(|_| {}).await;
    let mut far = far_end("uas_cancel_race.xml").await;
    let mut call = server.place_call(call_to(far.addr)).expect("call");
    assert_eq!(next(&mut call, &mut far).await, Update::Ringing);
    call.hangup();
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::Ended(EndReason::Cancelled)
    );
    assert_passed(&far.run.await.expect("join"), "CANCEL crossing 200");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.metrics().snapshot().active_dialogs, 0);
    assert!(
        server.dialogs().is_empty(),
        "dialogs left: {:?}",
        server.dialogs().all_dialog_ids()
    );
    server.shutdown().await;
}

/// Papercup is made the refresher of a 4 s session by `scenario`'s 200 OK; the scenario
/// fails unless the refresh it expects arrives (due at 2 s) before our BYE.
async fn we_refresh(scenario: &'static str) {
    let (server, _db) = server(|_| {}).await;
    let mut far = far_end(scenario).await;
    let mut call = server.place_call(call_to(far.addr)).expect("call");
    assert_eq!(next(&mut call, &mut far).await, Update::Answered);
    tokio::time::sleep(Duration::from_millis(2800)).await;
    call.hangup();
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::Ended(EndReason::LocalHangup)
    );
    assert_passed(&far.run.await.expect("join"), scenario);
    server.shutdown().await;
}

#[tokio::test]
async fn we_refresh_with_update_when_the_peer_allows_it() {
    we_refresh("uas_we_refresh_update.xml").await;
}

#[tokio::test]
async fn we_refresh_with_reinvite_when_update_is_not_allowed() {
    we_refresh("uas_we_refresh_reinvite.xml").await;
}

#[tokio::test]
async fn a_407_from_the_trunk_is_answered_with_credentials() {
    let (server, _db) = server(|_| {}).await;
    let mut far = far_end("uas_auth_challenge.xml").await;
    let mut c = call_to(far.addr);
    c.credential = Some(("trunkuser".into(), "trunk-secret".into()));
    let mut call = server.place_call(c).expect("call");
    assert_eq!(next(&mut call, &mut far).await, Update::Answered);
    call.hangup();
    assert_eq!(
        next(&mut call, &mut far).await,
        Update::Ended(EndReason::LocalHangup)
    );
    assert_passed(&far.run.await.expect("join"), "407 answered");
    server.shutdown().await;
}

/// 10 000 calls, 50 at a time, each answered and hung up: afterwards no dialog is left in
/// the stack and the active-dialog gauge is back to zero.
#[tokio::test]
async fn no_dialog_outlives_its_call_over_10000_calls() {
    const CALLS: u32 = 10_000;
    const PARALLEL: usize = 50;
    let (server, _db) = server(|_| {}).await;
    let far = far_end_calls("uas_answer.xml", &["-l", "10000"], CALLS).await;
    let server = std::sync::Arc::new(server);
    let next_call = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..PARALLEL {
        let (server, next_call, addr) = (server.clone(), next_call.clone(), far.addr);
        workers.push(tokio::spawn(async move {
            while next_call.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < CALLS {
                let mut call = server
                    .place_call(call_to(addr))
                    .map_err(|e| e.to_string())?;
                let first = tokio::time::timeout(Duration::from_secs(20), call.next()).await;
                if first != Ok(Some(Update::Answered)) {
                    return Err(format!(
                        "{}: expected Answered, got {first:?}",
                        call.call_id
                    ));
                }
                call.hangup();
                let last = tokio::time::timeout(Duration::from_secs(20), call.next()).await;
                if last != Ok(Some(Update::Ended(EndReason::LocalHangup))) {
                    return Err(format!("{}: expected the end, got {last:?}", call.call_id));
                }
            }
            Ok::<(), String>(())
        }));
    }
    let mut failure = None;
    for w in workers {
        if let Err(e) = w.await.expect("worker") {
            failure.get_or_insert(e);
        }
    }
    let run = far.run.await.expect("join");
    if let Some(e) = failure {
        let _ = std::fs::write("/tmp/leak_msgs.log", &run.messages);
        panic!(
            "{e}\nsipp errors:\n{}\nmessages (tail):\n{}",
            run.errors,
            &run.messages[run.messages.len().saturating_sub(4000)..]
        );
    }
    assert_passed(&run, "10 000 calls");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = server.metrics().snapshot();
    assert_eq!(m.calls_started, u64::from(CALLS));
    assert_eq!(m.calls_ended, u64::from(CALLS));
    assert_eq!(m.active_dialogs, 0);
    assert!(
        server.dialogs().is_empty(),
        "{} dialogs left",
        server.dialogs().len()
    );
}

#[tokio::test]
async fn behind_1to1_nat_the_public_address_is_advertised() {
    let (server, _db) = server(|c| c.public_ip = Some("192.0.2.10".parse().expect("ip"))).await;
    let far = far_end("uas_public_ip.xml").await;
    let _call = server.place_call(call_to(far.addr)).expect("call");
    assert_passed(&far.run.await.expect("join"), "public address");
    server.shutdown().await;
}
