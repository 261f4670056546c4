//! 1 000 calls set up and torn down leave no ports, tasks or memory behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use media::codec::Codec;
use media::rtp_leg::{RtpLeg, Security};
use media::session::CallMedia;
use media::webrtc_leg::WebRtcLeg;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::Marshal;
use tokio::net::UdpSocket;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn sdp_for(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

fn pcmu(seq: u16) -> Vec<u8> {
    Packet {
        header: Header {
            version: 2,
            payload_type: 0,
            sequence_number: seq,
            timestamp: seq as u32 * 160,
            ssrc: 7,
            ..Default::default()
        },
        payload: Bytes::from(vec![0xFFu8; 160]),
    }
    .marshal()
    .unwrap()
    .to_vec()
}

/// One desk phone ↔ trunk call with a little media each way.
async fn rtp_call(engine: &media::engine::MediaEngine, phone: &UdpSocket, trunk: &UdpSocket) {
    let (mut a, offer) = RtpLeg::offer(engine, &[Codec::Pcmu], Security::None)
        .await
        .unwrap();
    let (mut b, _) = RtpLeg::offer(engine, &[Codec::Pcmu], Security::None)
        .await
        .unwrap();
    assert!(offer.contains("m=audio "));
    a.set_remote(&sdp_for(phone.local_addr().unwrap().port()))
        .unwrap();
    b.set_remote(&sdp_for(trunk.local_addr().unwrap().port()))
        .unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let call = CallMedia::bridge(engine, a.into(), b.into()).unwrap();
    let mut buf = [0u8; 1500];
    for seq in 0..3u16 {
        phone.send_to(&pcmu(seq), a_addr).await.unwrap();
        trunk.send_to(&pcmu(seq), b_addr).await.unwrap();
        for sock in [trunk, phone] {
            tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
                .await
                .expect("media crosses the bridge")
                .unwrap();
        }
    }
    let report = call.stop().await;
    assert!(report.passthrough);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_leave_no_ports_tasks_or_memory() {
    // Ports rest 200 ms after each call: the range must outlast the calls of 200 ms.
    let engine = media::engine::MediaEngine::new(media::engine::MediaConfig {
        rtp_ports: (44000, 45999),
        webrtc_ports: (46000, 46099),
        port_drain: Duration::from_millis(200),
        ..Default::default()
    })
    .unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let trunk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    // Warm up allocator arenas and lazily created runtime state.
    for _ in 0..100 {
        rtp_call(&engine, &phone, &trunk).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let tasks = metrics.num_alive_tasks();
    let rss = rss_kib();
    for _ in 0..1000 {
        rtp_call(&engine, &phone, &trunk).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(engine.rtp_ports_in_use(), 0, "every port back in the pool");
    assert_eq!(engine.live_calls(), 0);
    assert_eq!(
        metrics.num_alive_tasks(),
        tasks,
        "task count back to baseline"
    );
    let grown = rss_kib().saturating_sub(rss);
    // A leak of even one packet buffer per call would be > 2 MiB over 1 000 calls.
    assert!(grown < 2048, "RSS grew by {grown} KiB over 1 000 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_calls_give_their_ports_and_tasks_back() {
    let engine = engine(41600);
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks = metrics.num_alive_tasks();
    for _ in 0..20 {
        let (mut browser, offer) = Browser::offer().await;
        let (web, answer) = WebRtcLeg::answer(&engine, &offer).await.unwrap();
        browser.connect(answer).await;
        assert_eq!(engine.webrtc_ports_in_use(), 1);
        let call = CallMedia::echo(&engine, web.into()).unwrap();
        call.stop().await;
        let _ = browser.pc.close().await;
    }
    // The connections' own tasks wind down after close.
    let mut settled = false;
    for _ in 0..50 {
        if engine.webrtc_ports_in_use() == 0 && metrics.num_alive_tasks() <= tasks {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled,
        "ports in use {}, tasks {} (baseline {tasks})",
        engine.webrtc_ports_in_use(),
        metrics.num_alive_tasks()
    );
    assert_eq!(engine.live_calls(), 0);
}

/// A browser that vanishes (its process gone: no DTLS close, no more ICE checks) ends the
/// call within a bounded time: the leg reports failure and the media task frees its port.
#[test]
fn a_vanished_browser_ends_the_call() {
    let gateway = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let engine = gateway.block_on(async {
        media::engine::MediaEngine::new(media::engine::MediaConfig {
            rtp_ports: (46200, 46299),
            webrtc_ports: (46300, 46399),
            webrtc_failed_after: Duration::from_secs(4),
            port_drain: Duration::from_millis(100),
            ..Default::default()
        })
        .unwrap()
    });
    // The browser lives in a runtime of its own, shut down abruptly below.
    let browser_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (mut browser, offer) = browser_rt.block_on(Browser::offer());
    let (web, answer) = gateway
        .block_on(WebRtcLeg::answer(&engine, &offer))
        .unwrap();
    browser_rt.block_on(browser.connect(answer));
    let mut call = gateway.block_on(async { CallMedia::echo(&engine, web.into()).unwrap() });
    let started = std::time::Instant::now();
    drop(browser);
    browser_rt.shutdown_background();
    let failed = gateway.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(30), call.next_event()).await {
                Ok(Some(media::session::MediaEvent::Failed { .. })) => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    });
    let took = started.elapsed();
    assert!(failed, "the call never noticed the browser was gone");
    assert!(took < Duration::from_secs(20), "noticed after {took:?}");
    gateway.block_on(async {
        call.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
    assert_eq!(engine.webrtc_ports_in_use(), 0);
    eprintln!("vanished browser noticed after {took:?}");
}
