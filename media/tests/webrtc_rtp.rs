//! The media engine end to end: a webrtc-rs "browser" on the WebRTC leg, baresip (or a
//! plain UDP peer) on the RTP leg, real sockets on loopback.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use media::bridge::Side;
use media::codec::Codec;
use media::dtmf::{DigitSender, TelephoneEvent};
use media::rtp_leg::{RtpLeg, Security};
use media::session::{CallMedia, MediaEvent};
use media::srtp::Suite;
use media::webrtc_leg::WebRtcLeg;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};

/// The browser sends 440 Hz, baresip sends 880 Hz; each must hear the other's tone.
async fn tone_call(base: u16, security: Security, name: &str) {
    let engine = engine(base);
    let dir = tmp(name);
    let mic = dir.join("mic.wav");
    write_wav(&mic, 8000, &sine(880.0, 8000, 30.0));
    let extra = if security == Security::None {
        ""
    } else {
        ";mediaenc=srtp"
    };
    let home = dir.join("baresip");
    let (baresip, sip_port) = baresip(&home, &mic, extra);

    // The browser's side.
    let (mut browser, offer) = Browser::offer().await;
    let (web, answer) = WebRtcLeg::answer(&engine, &offer).await.unwrap();
    assert!(answer.contains("a=ice-lite"), "ICE-lite answer:\n{answer}");
    browser.connect(answer).await;
    let opus_pt = web.format().pt;

    // The SIP side: our offer, baresip's answer.
    let (mut rtp, our_offer) = RtpLeg::offer(&engine, &[Codec::Pcmu], security)
        .await
        .unwrap();
    if security != Security::None {
        assert!(
            our_offer.contains("RTP/SAVP")
                && our_offer.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_")
        );
    }
    let (call, their_answer) = SipCall::invite(sip_port, &our_offer);
    let fmt = rtp.set_remote(&their_answer).unwrap();
    assert_eq!(fmt.codec, Codec::Pcmu);
    if security != Security::None {
        assert!(
            their_answer.contains("RTP/SAVP"),
            "baresip answered SRTP:\n{their_answer}"
        );
    }
    let media = CallMedia::bridge(&engine, web.into(), rtp.into()).unwrap();

    // 4 s of 440 Hz from the browser, 20 ms Opus frames on the 48 kHz clock.
    let mut enc = opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let tone = sine(440.0, 48000, 4.0);
    let mut dec = opus::Decoder::new(48000, opus::Channels::Mono).unwrap();
    let mut received: Vec<i16> = Vec::new();
    let mut ts: u32 = rand::random();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut last_ts = None::<u32>;
    for frame in tone.chunks_exact(960) {
        tick.tick().await;
        let mut buf = vec![0u8; 400];
        let n = enc.encode(frame, &mut buf).unwrap();
        buf.truncate(n);
        browser.send(opus_pt, false, ts, buf).await;
        ts = ts.wrapping_add(960);
        while let Ok(p) = browser.rx.try_recv() {
            if p.header.payload_type == opus_pt {
                if let Some(l) = last_ts {
                    // Frames from the gateway step +960 on the 48 kHz clock.
                    let step = p.header.timestamp.wrapping_sub(l);
                    assert!(
                        step == 960 || step > 960 && step % 960 == 0,
                        "timestamp step {step}"
                    );
                }
                last_ts = Some(p.header.timestamp);
                let mut pcm = vec![0i16; 5760];
                let n = dec.decode(&p.payload, &mut pcm, false).unwrap();
                received.extend_from_slice(&pcm[..n]);
            }
        }
    }
    call.bye();
    let report = media.stop().await;
    let _ = browser.pc.close().await;
    // baresip closes its recording when the call ends.
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert!(
        received.len() > 48000 * 2,
        "browser heard {} samples",
        received.len()
    );
    let (f, rms) = dominant(&received[48000..], 48000);
    assert!(
        (f - 880.0).abs() <= 10.0 && rms > 1000.0,
        "browser heard {f} Hz at RMS {rms}"
    );

    drop(baresip);
    let Some(heard) = recording(&home) else {
        panic!(
            "no recording; baresip said:\n{}",
            std::fs::read_to_string(home.join("log.txt")).unwrap_or_default()
        );
    };
    let (heard_pcm, rate) = read_wav(&heard);
    assert_eq!(rate, 8000);
    assert!(
        heard_pcm.len() > 8000 * 2,
        "baresip heard {} samples",
        heard_pcm.len()
    );
    let (f, rms) = dominant(&heard_pcm[8000..heard_pcm.len().min(8000 * 3)], 8000);
    assert!(
        (f - 440.0).abs() <= 10.0 && rms > 1000.0,
        "baresip heard {f} Hz at RMS {rms}"
    );

    assert!(!report.passthrough);
    assert!(report.transcoded > 300, "{report:?}");
    let b = report.b.unwrap();
    assert!(b.packets_received > 100 && b.packets_sent > 100, "{b:?}");
    assert!(b.mos.unwrap() > 4.0, "{b:?}");
    assert!(report.a.packets_received > 100, "{:?}", report.a);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_tone_reaches_baresip_as_pcmu_and_back() {
    tone_call(40000, Security::None, "plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdes_srtp_toward_baresip_decrypts_both_ways() {
    tone_call(40400, Security::Sdes(Suite::Aes128Sha1_80), "srtp80").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_crosses_both_ways_with_rescaled_durations() {
    let engine = engine(40800);
    let (mut browser, offer) = Browser::offer().await;
    let offer = with_browser_dtmf(&offer);
    let (web, answer) = WebRtcLeg::answer(&engine, &offer).await.unwrap();
    let te48 = web
        .format()
        .dtmf_pt
        .unwrap_or_else(|| panic!("telephone-event/48000 negotiated:\n{offer}\n{answer}"));
    assert!(!answer.contains("telephone-event/8000"), "{answer}");
    browser.connect(answer).await;

    // A plain RTP peer (our own independent parsing of what arrives).
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let pport = peer.local_addr().unwrap().port();
    let (mut rtp, _offer) = RtpLeg::offer(&engine, &[Codec::Pcmu], Security::None)
        .await
        .unwrap();
    let gateway = rtp.local_addr().unwrap();
    rtp.set_remote(&format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {pport} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    ))
    .unwrap();
    let mut media = CallMedia::bridge(&engine, web.into(), rtp.into()).unwrap();

    // Browser → peer: 1 2 3 # *, 100 ms each (4800 units at 48 kHz), 20 ms packets.
    let digits = ['1', '2', '3', '#', '*'];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut ts: u32 = 1000;
    for d in digits {
        let ev = media::dtmf::event_for_char(d).unwrap();
        for (te, marker) in DigitSender::new(ev, 4800, 960, 10) {
            tick.tick().await;
            browser.send(te48, marker, ts, te.to_bytes().to_vec()).await;
        }
        ts = ts.wrapping_add(4800 + 4800);
        for _ in 0..5 {
            tick.tick().await;
        }
    }
    // What the peer got: telephone-event/8000 (PT 101), 800-unit digits.
    let mut got: Vec<(u32, TelephoneEvent, bool)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline && got.iter().filter(|g| g.1.end).count() < 15 {
        if let Ok((n, _)) = peer.recv_from(&mut buf) {
            let p = Packet::unmarshal(&mut Bytes::copy_from_slice(&buf[..n])).unwrap();
            if p.header.payload_type == 101 {
                got.push((
                    p.header.timestamp,
                    TelephoneEvent::parse(&p.payload).unwrap(),
                    p.header.marker,
                ));
            }
        }
    }
    let ends: Vec<&(u32, TelephoneEvent, bool)> = got.iter().filter(|g| g.1.end).collect();
    assert_eq!(ends.len(), 15, "3 end packets per digit: {got:?}");
    let mut seen = Vec::new();
    for (ts, te, _) in &ends {
        assert_eq!(te.duration, 800, "100 ms at 8 kHz");
        if seen.last().map(|(t, _)| t) != Some(ts) {
            seen.push((*ts, media::dtmf::digit_char(te.event).unwrap()));
        }
    }
    assert_eq!(seen.iter().map(|s| s.1).collect::<String>(), "123#*");
    assert!(
        got.iter().filter(|g| g.2).count() == 5,
        "one marker per digit"
    );
    assert!(got
        .iter()
        .filter(|g| !g.1.end)
        .all(|g| g.1.duration % 160 == 0 && g.1.duration <= 800));

    // Peer → browser: the same digits at 8 kHz come out at 48 kHz (×6).
    let mut seq: u16 = 7;
    let mut pts: u32 = 5000;
    for d in digits {
        let ev = media::dtmf::event_for_char(d).unwrap();
        for (te, marker) in DigitSender::new(ev, 800, 160, 10) {
            tick.tick().await;
            let p = Packet {
                header: Header {
                    version: 2,
                    marker,
                    payload_type: 101,
                    sequence_number: seq,
                    timestamp: pts,
                    ssrc: 42,
                    ..Default::default()
                },
                payload: Bytes::copy_from_slice(&te.to_bytes()),
            };
            seq = seq.wrapping_add(1);
            peer.send_to(&p.marshal().unwrap(), gateway).unwrap();
        }
        pts = pts.wrapping_add(1600);
    }
    let mut back: Vec<TelephoneEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && back.iter().filter(|t| t.end).count() < 15 {
        match tokio::time::timeout(Duration::from_millis(200), browser.rx.recv()).await {
            Ok(Some(p)) if p.header.payload_type == te48 => {
                back.push(TelephoneEvent::parse(&p.payload).unwrap())
            }
            _ => {}
        }
    }
    let back_ends: Vec<&TelephoneEvent> = back.iter().filter(|t| t.end).collect();
    assert_eq!(back_ends.len(), 15, "{back:?}");
    assert!(back_ends.iter().all(|t| t.duration == 4800), "{back:?}");
    let order: String = back_ends
        .iter()
        .step_by(3)
        .map(|t| media::dtmf::digit_char(t.event).unwrap())
        .collect();
    assert_eq!(order, "123#*");

    // Digits are reported once each, from each side, with their duration.
    let mut reported = Vec::new();
    while reported.len() < 10 {
        match tokio::time::timeout(Duration::from_secs(2), media.next_event()).await {
            Ok(Some(MediaEvent::Digit { from, digit })) => {
                reported.push((from, digit.digit, digit.duration_ms()))
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let from_a: String = reported
        .iter()
        .filter(|r| r.0 == Side::A)
        .map(|r| r.1)
        .collect();
    let from_b: String = reported
        .iter()
        .filter(|r| r.0 == Side::B)
        .map(|r| r.1)
        .collect();
    assert_eq!((from_a.as_str(), from_b.as_str()), ("123#*", "123#*"));
    assert!(reported.iter().all(|r| r.2 == 100), "{reported:?}");
    let report = media.stop().await;
    assert_eq!(report.dtmf_packets, 80);
    let _ = browser.pc.close().await;
}
