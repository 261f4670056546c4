//! Media engine cost per call: CPU of one call-second through the bridge (Opus↔PCMU
//! transcoding with SRTP on the browser side, bare libopus for comparison, G.711
//! pass-through) and resident memory per live call (bare bridges, two RTP legs with their
//! sockets and task, an answered WebRTC leg).
//!
//! CPU: a single-threaded tight loop over pre-built packets (no pacing, no sockets); one
//! call-second is 50 packets each way. The packets of every replayed call-second carry the
//! next sequence numbers and timestamps, so the bridge sees one continuous stream; the
//! counters are checked at the end (every frame transcoded or passed, nothing dropped).
//! Memory: VmRSS before and after creating N calls, each measured in a child process of
//! its own so that one measurement's freed heap does not hide the next one's growth.
//!
//! Run: `cargo bench -p media --bench media_bridge`

use std::hint::black_box;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::bridge::{Bridge, LegFormat, Side, Transmit};
use media::codec::Codec;
use media::engine::{MediaConfig, MediaEngine};
use media::g711::Law;
use media::rtp_leg::{RtpLeg, Security};
use media::session::CallMedia;
use media::srtp::{SdesCrypto, SrtpSession, Suite};
use media::webrtc_leg::WebRtcLeg;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};

/// Packets per call-second and direction (20 ms frames).
const FRAMES: usize = 50;
/// Call-seconds replayed before timing.
const WARMUP: usize = 5;
/// Call-seconds per timed run.
const PER_RUN: usize = 20;
/// Timed runs of each measurement (median and min reported).
const RUNS: usize = 11;
/// Call-seconds of media built beforehand.
const TOTAL: usize = WARMUP + PER_RUN * RUNS;
/// Seconds of distinct audio encoded; the stream cycles through it (seq/ts keep going).
const AUDIO_SECS: usize = 10;
/// First sequence number of the input streams: they wrap during the run.
const FIRST_SEQ: u16 = 60_000;

#[path = "../tests/common/mod.rs"]
mod common;

const BROWSER_SSRC: u32 = 0x1111_1111;
const TRUNK_SSRC: u32 = 0x2222_2222;

fn opus_fmt() -> LegFormat {
    LegFormat {
        codec: Codec::Opus,
        pt: 111,
        dtmf_pt: Some(126),
    }
}

fn pcmu_fmt() -> LegFormat {
    LegFormat {
        codec: Codec::Pcmu,
        pt: 0,
        dtmf_pt: Some(101),
    }
}

/// A speech-like signal: a 130 Hz voice with a few harmonics and formant-ish partials,
/// syllable-rate amplitude modulation (never fully silent) and a little noise.
fn speech(rate: u32, secs: usize, shift: f64) -> Vec<i16> {
    let n = rate as usize * secs;
    let partials = [
        (130.0 * shift, 0.30),
        (260.0 * shift, 0.22),
        (390.0 * shift, 0.15),
        (700.0 * shift, 0.12),
        (1150.0 * shift, 0.08),
        (2400.0 * shift, 0.04),
    ];
    let mut noise: u32 = 0x1234_5678;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let tau = 2.0 * std::f64::consts::PI;
            let env =
                0.25 + 0.75 * (tau * 3.1 * t).sin().abs() * (0.6 + 0.4 * (tau * 0.37 * t).sin());
            let voice: f64 = partials
                .iter()
                .map(|(f, a)| a * (tau * f * t + f / 100.0).sin())
                .sum();
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let hiss = ((noise >> 16) as f64 / 65536.0 - 0.5) * 0.02;
            ((voice * env + hiss) * 0.8 * 32767.0).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

fn packet(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: Bytes) -> Packet {
    Packet {
        header: Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            ..Default::default()
        },
        payload,
    }
}

/// The browser's Opus payloads: 48 kHz mono, VoIP mode, 32 kbit/s, in-band FEC (what
/// Chrome sends), 20 ms frames.
fn browser_opus(secs: usize) -> Vec<Bytes> {
    let pcm = speech(48_000, secs, 1.0);
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
        .expect("opus encoder at 48 kHz");
    enc.set_bitrate(opus::Bitrate::Bits(32_000))
        .expect("bitrate");
    enc.set_inband_fec(true).expect("fec");
    enc.set_packet_loss_perc(5).expect("loss estimate");
    let mut buf = vec![0u8; 1500];
    pcm.chunks_exact(960)
        .map(|frame| {
            let n = enc.encode(frame, &mut buf).expect("opus encode");
            Bytes::copy_from_slice(&buf[..n])
        })
        .collect()
}

/// The trunk's PCMU payloads (160 bytes per 20 ms).
fn trunk_pcmu(secs: usize) -> Vec<Bytes> {
    let pcm = speech(8_000, secs, 0.83);
    pcm.chunks_exact(160)
        .map(|frame| {
            let mut out = Vec::with_capacity(160);
            Law::Ulaw.encode(frame, &mut out);
            Bytes::from(out)
        })
        .collect()
}

/// `TOTAL` call-seconds of one direction: RTP packets with continuous seq/ts, payloads
/// cycling through `payloads`.
fn stream(payloads: &[Bytes], pt: u8, ssrc: u32, units: u32) -> Vec<Packet> {
    (0..TOTAL * FRAMES)
        .map(|n| {
            packet(
                pt,
                FIRST_SEQ.wrapping_add(n as u16),
                1000u32.wrapping_add(n as u32 * units),
                ssrc,
                n == 0,
                payloads[n % payloads.len()].clone(),
            )
        })
        .collect()
}

fn marshal_all(packets: &[Packet]) -> Vec<Vec<u8>> {
    packets
        .iter()
        .map(|p| p.marshal().expect("marshal").to_vec())
        .collect()
}

/// A pair of SDES sessions: (browser, gateway), each decrypting what the other encrypts.
fn srtp_pair() -> (SrtpSession, SrtpSession) {
    let browser_key = SdesCrypto::generate(1, Suite::Aes128Sha1_80);
    let gateway_key = SdesCrypto::generate(1, Suite::Aes128Sha1_80);
    (
        SrtpSession::new(&browser_key, &gateway_key).expect("browser SRTP"),
        SrtpSession::new(&gateway_key, &browser_key).expect("gateway SRTP"),
    )
}

fn protect_all(session: &mut SrtpSession, raw: &[Vec<u8>]) -> Vec<Vec<u8>> {
    raw.iter()
        .map(|r| session.protect_rtp(r).expect("protect"))
        .collect()
}

/// Median and minimum of per-call-second times.
struct Stats {
    median: Duration,
    min: Duration,
}

/// Runs `second(i)` for call-second `i` = 0.. : `WARMUP` untimed, then `RUNS` timed runs of
/// `PER_RUN` call-seconds each.
fn time_runs(mut second: impl FnMut(usize)) -> Stats {
    for i in 0..WARMUP {
        second(i);
    }
    let mut samples: Vec<Duration> = (0..RUNS)
        .map(|r| {
            let t = Instant::now();
            for k in 0..PER_RUN {
                second(WARMUP + r * PER_RUN + k);
            }
            t.elapsed() / PER_RUN as u32
        })
        .collect();
    samples.sort();
    Stats {
        median: samples[RUNS / 2],
        min: samples[0],
    }
}

/// Checks the bridge's output stream of one leg: one SSRC, sequence +1, timestamp +1 frame.
#[derive(Default)]
struct Continuity {
    last: [Option<(u32, u16, u32)>; 2],
    sent: [u64; 2],
    breaks: u64,
}

impl Continuity {
    fn check(&mut self, t: &Transmit) {
        let i = match t.to {
            Side::A => 0,
            Side::B => 1,
        };
        let units = if t.packet.header.payload_type == 111 {
            960
        } else {
            160
        };
        let h = &t.packet.header;
        if let Some((ssrc, seq, ts)) = self.last[i] {
            if ssrc != h.ssrc
                || h.sequence_number != seq.wrapping_add(1)
                || h.timestamp != ts.wrapping_add(units)
            {
                self.breaks += 1;
            }
        }
        self.last[i] = Some((h.ssrc, h.sequence_number, h.timestamp));
        self.sent[i] += 1;
    }
}

struct Row {
    what: &'static str,
    stats: Stats,
}

fn at(base: Instant, n: usize) -> Instant {
    base + Duration::from_millis(20 * n as u64)
}

/// 1. The transcoded call as the media task does it, minus the syscalls: SRTP-unprotect +
///    parse the browser's Opus, parse the trunk's PCMU, bridge, then marshal every output
///    and SRTP-protect what goes to the browser.
fn transcoded_full(opus: &[Packet], pcmu: &[Packet]) -> Stats {
    let (mut browser, mut gateway) = srtp_pair();
    let opus_wire = protect_all(&mut browser, &marshal_all(opus));
    let pcmu_wire = marshal_all(pcmu);
    let mut bridge = Bridge::new(opus_fmt(), pcmu_fmt());
    let mut out: Vec<Transmit> = Vec::with_capacity(8);
    let mut cont = Continuity::default();
    let mut to_browser_first_second: Vec<Vec<u8>> = Vec::new();
    let mut bytes_out = 0usize;
    let base = Instant::now();
    let stats = time_runs(|sec| {
        for n in sec * FRAMES..(sec + 1) * FRAMES {
            let now = at(base, n);
            let plain = gateway
                .unprotect_rtp(&opus_wire[n])
                .expect("SRTP unprotect");
            let mut b = Bytes::from(plain);
            let p = Packet::unmarshal(&mut b).expect("RTP from the browser");
            bridge.on_packet(Side::A, p, now, &mut out);
            let mut b = Bytes::copy_from_slice(&pcmu_wire[n]);
            let p = Packet::unmarshal(&mut b).expect("RTP from the trunk");
            bridge.on_packet(Side::B, p, now, &mut out);
            for t in out.drain(..) {
                cont.check(&t);
                let raw = t.packet.marshal().expect("marshal");
                match t.to {
                    Side::A => {
                        let wire = gateway.protect_rtp(&raw).expect("SRTP protect");
                        bytes_out += wire.len();
                        if sec == 0 {
                            to_browser_first_second.push(wire);
                        }
                    }
                    Side::B => bytes_out += raw.len(),
                }
            }
        }
    });
    black_box(bytes_out);
    let c = bridge.counters();
    let frames = (TOTAL * FRAMES) as u64;
    assert_eq!(c.transcoded, 2 * frames, "every frame transcoded: {c:?}");
    assert_eq!(c.dropped, 0, "nothing dropped: {c:?}");
    assert_eq!(c.concealed, 0, "nothing concealed: {c:?}");
    assert_eq!(cont.sent, [frames, frames], "one packet out per packet in");
    assert_eq!(cont.breaks, 0, "output seq/ts continuous");
    // The browser can decrypt and decode what the gateway sent it.
    let mut dec = opus::Decoder::new(48_000, opus::Channels::Mono).expect("opus decoder");
    let mut pcm = vec![0i16; 5760];
    for wire in &to_browser_first_second {
        let plain = browser.unprotect_rtp(wire).expect("browser decrypts");
        let p = Packet::unmarshal(&mut Bytes::from(plain)).expect("RTP to the browser");
        assert_eq!(p.header.payload_type, 111);
        let n = dec.decode(&p.payload, &mut pcm, false).expect("valid Opus");
        assert_eq!(n, 960, "20 ms at 48 kHz");
    }
    assert_eq!(to_browser_first_second.len(), FRAMES);
    stats
}

/// The bridge alone on the same call: `on_packet` with parsed packets, outputs dropped.
fn transcoded_bridge_only(opus: &[Packet], pcmu: &[Packet]) -> Stats {
    let mut a = opus.to_vec();
    let mut b = pcmu.to_vec();
    let mut bridge = Bridge::new(opus_fmt(), pcmu_fmt());
    let mut out: Vec<Transmit> = Vec::with_capacity(8);
    let base = Instant::now();
    let stats = time_runs(|sec| {
        for n in sec * FRAMES..(sec + 1) * FRAMES {
            let now = at(base, n);
            bridge.on_packet(Side::A, std::mem::take(&mut a[n]), now, &mut out);
            bridge.on_packet(Side::B, std::mem::take(&mut b[n]), now, &mut out);
            black_box(&out);
            out.clear();
        }
    });
    let c = bridge.counters();
    assert_eq!(c.transcoded, 2 * (TOTAL * FRAMES) as u64, "{c:?}");
    assert_eq!(c.dropped + c.concealed, 0, "{c:?}");
    stats
}

/// What [`bare_libopus`] runs per frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Opus {
    /// Decode the browser's packet and encode the trunk's frame.
    Both,
    /// Decode only.
    Decode,
    /// Encode only, at this encoder complexity (None: the bridge's).
    Encode(Option<i32>),
}

/// The bridge's encoder (media/src/codec.rs), optionally at another complexity.
fn encoder_8k(complexity: Option<i32>) -> opus::Encoder {
    media::codec::opus_encoder(complexity.unwrap_or(media::codec::OPUS_COMPLEXITY))
        .expect("opus encoder")
}

/// 2. libopus alone: decode the browser's packets at 8 kHz, encode the trunk's audio
///    (decoded PCMU) at 8 kHz with the bridge's encoder settings.
fn bare_libopus(opus: &[Packet], pcmu: &[Packet], what: Opus) -> Stats {
    let frames_8k: Vec<Vec<i16>> = pcmu
        .iter()
        .take(AUDIO_SECS * FRAMES)
        .map(|p| {
            let mut pcm = Vec::with_capacity(160);
            Law::Ulaw.decode(&p.payload, &mut pcm);
            pcm
        })
        .collect();
    let mut dec = opus::Decoder::new(8_000, opus::Channels::Mono).expect("opus decoder");
    let mut enc = encoder_8k(match what {
        Opus::Encode(c) => c,
        _ => None,
    });
    let (decode, encode) = match what {
        Opus::Both => (true, true),
        Opus::Decode => (true, false),
        Opus::Encode(_) => (false, true),
    };
    let mut pcm = vec![0i16; 960];
    let mut buf = vec![0u8; 400];
    let mut total = 0usize;
    let stats = time_runs(|sec| {
        for n in sec * FRAMES..(sec + 1) * FRAMES {
            if decode {
                total += dec
                    .decode(&opus[n].payload, &mut pcm, false)
                    .expect("decode");
            }
            if encode {
                total += enc
                    .encode(&frames_8k[n % frames_8k.len()], &mut buf)
                    .expect("encode");
            }
        }
    });
    black_box(total);
    stats
}

/// SRTP alone: unprotect 50 browser packets, protect 50 packets of the same size.
fn srtp_only(opus: &[Packet]) -> Stats {
    let (mut browser, mut gateway) = srtp_pair();
    let raw = marshal_all(opus);
    let wire = protect_all(&mut browser, &raw);
    let mut total = 0usize;
    let stats = time_runs(|sec| {
        for n in sec * FRAMES..(sec + 1) * FRAMES {
            total += gateway.unprotect_rtp(&wire[n]).expect("unprotect").len();
            total += gateway.protect_rtp(&raw[n]).expect("protect").len();
        }
    });
    black_box(total);
    stats
}

/// 3. PCMU↔PCMU pass-through, with parsing and marshalling (no SRTP), or the bridge alone.
fn passthrough(pcmu: &[Packet], with_io: bool) -> Stats {
    let wire = marshal_all(pcmu);
    let mut a = pcmu.to_vec();
    let mut b = a.clone();
    for p in &mut b {
        p.header.ssrc = BROWSER_SSRC;
    }
    let mut bridge = Bridge::new(pcmu_fmt(), pcmu_fmt());
    let mut out: Vec<Transmit> = Vec::with_capacity(8);
    let mut cont = Continuity::default();
    let mut bytes_out = 0usize;
    let base = Instant::now();
    let stats = time_runs(|sec| {
        for n in sec * FRAMES..(sec + 1) * FRAMES {
            let now = at(base, n);
            if with_io {
                for side in [Side::A, Side::B] {
                    let mut raw = Bytes::copy_from_slice(&wire[n]);
                    let p = Packet::unmarshal(&mut raw).expect("RTP");
                    bridge.on_packet(side, p, now, &mut out);
                }
                for t in out.drain(..) {
                    cont.check(&t);
                    bytes_out += t.packet.marshal().expect("marshal").len();
                }
            } else {
                bridge.on_packet(Side::A, std::mem::take(&mut a[n]), now, &mut out);
                bridge.on_packet(Side::B, std::mem::take(&mut b[n]), now, &mut out);
                black_box(&out);
                out.clear();
            }
        }
    });
    black_box(bytes_out);
    let c = bridge.counters();
    let frames = (TOTAL * FRAMES) as u64;
    assert_eq!(c.passed, 2 * frames, "every packet passed: {c:?}");
    assert_eq!(c.dropped + c.transcoded, 0, "{c:?}");
    if with_io {
        assert_eq!(cont.sent, [frames, frames]);
        assert_eq!(cont.breaks, 0, "output seq/ts continuous");
    }
    stats
}

// ---------------------------------------------------------------------------------------
// Memory (each in a child process: `media_bridge --mem=NAME`).

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A bridge that has carried `k` packets each way (so its codecs exist).
fn live_bridge(a: LegFormat, opus: &[Packet], pcmu: &[Packet]) -> Bridge {
    let mut bridge = Bridge::new(a, pcmu_fmt());
    let mut out = Vec::with_capacity(8);
    let base = Instant::now();
    let from_a = if a.codec == Codec::Opus { opus } else { pcmu };
    for (n, (pa, pb)) in from_a.iter().zip(pcmu).enumerate() {
        bridge.on_packet(Side::A, pa.clone(), at(base, n), &mut out);
        bridge.on_packet(Side::B, pb.clone(), at(base, n), &mut out);
        out.clear();
    }
    bridge
}

fn mem_bridges(transcoded: bool) -> (usize, u64, u64) {
    const N: usize = 1000;
    let opus = stream(&browser_opus(1)[..5], 111, BROWSER_SSRC, 960);
    let pcmu = stream(&trunk_pcmu(1)[..5], 0, TRUNK_SSRC, 160);
    let (opus, pcmu) = (&opus[..5], &pcmu[..5]);
    let a = if transcoded { opus_fmt() } else { pcmu_fmt() };
    let mut bridges = Vec::with_capacity(N);
    // One untimed first bridge: lazy statics (tracing, rand) and libopus' first use.
    let first = live_bridge(a, opus, pcmu);
    let c = first.counters();
    assert_eq!(c.dropped, 0, "{c:?}");
    if transcoded {
        assert_eq!(c.transcoded, 10, "{c:?}");
    } else {
        assert_eq!(c.passed, 10, "{c:?}");
    }
    let before = vm_rss_kib();
    for _ in 0..N {
        bridges.push(live_bridge(a, opus, pcmu));
    }
    let after = vm_rss_kib();
    black_box(&bridges);
    (N, before, after)
}

fn answer_sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    )
}

fn bench_engine() -> MediaEngine {
    MediaEngine::new(MediaConfig {
        rtp_ports: (42_000, 45_999),
        webrtc_ports: (46_000, 46_999),
        ..MediaConfig::default()
    })
    .expect("media engine")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn rtp_call(engine: &MediaEngine, sink_port: u16) -> CallMedia {
    let mut legs = Vec::with_capacity(2);
    for _ in 0..2 {
        let (mut leg, _offer) = RtpLeg::offer(engine, &[Codec::Pcmu], Security::None)
            .await
            .expect("RTP leg");
        leg.set_remote(&answer_sdp(sink_port)).expect("answer");
        legs.push(leg);
    }
    let b = legs.pop().expect("leg b");
    let a = legs.pop().expect("leg a");
    CallMedia::bridge(engine, a.into(), b.into()).expect("bridge")
}

fn mem_rtp_calls() -> (usize, u64, u64) {
    const N: usize = 200;
    let rt = runtime();
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink socket");
    let sink_port = sink.local_addr().expect("sink address").port();
    let engine = bench_engine();
    rt.block_on(async {
        let mut calls = Vec::with_capacity(N + 1);
        calls.push(rtp_call(&engine, sink_port).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = vm_rss_kib();
        for _ in 0..N {
            calls.push(rtp_call(&engine, sink_port).await);
        }
        // Let every task run its first iteration (the first RTCP report goes out at once).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = vm_rss_kib();
        assert_eq!(engine.live_calls(), N + 1, "every call's task is running");
        assert_eq!(engine.rtp_ports_in_use(), 2 * (N + 1));
        black_box(&calls);
        (N, before, after)
    })
}

fn mem_webrtc_answers() -> (usize, u64, u64) {
    const N: usize = 50;
    let rt = runtime();
    let engine = bench_engine();
    rt.block_on(async {
        // A webrtc-rs client's offer (the media tests' browser), answered N times.
        let (browser, offer) = common::Browser::offer().await;
        let _ = browser.pc.close().await;
        let mut legs = Vec::with_capacity(N + 1);
        legs.push(WebRtcLeg::answer(&engine, &offer).await.expect("answer"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = vm_rss_kib();
        for _ in 0..N {
            legs.push(WebRtcLeg::answer(&engine, &offer).await.expect("answer"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = vm_rss_kib();
        assert_eq!(engine.webrtc_ports_in_use(), N + 1);
        black_box(&legs);
        (N, before, after)
    })
}

/// Runs `--mem=name` in a child process; returns (N, KiB before, KiB after).
fn child_mem(name: &str) -> Option<(usize, u64, u64)> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .arg(format!("--mem={name}"))
        .output()
        .expect("child runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("MEM "));
    let parsed = line.and_then(|l| {
        let v: Vec<u64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
        (v.len() == 3).then(|| (v[0] as usize, v[1], v[2]))
    });
    if parsed.is_none() {
        eprintln!(
            "memory measurement {name} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parsed
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    if let Some(name) = std::env::args().find_map(|a| a.strip_prefix("--mem=").map(String::from)) {
        let (n, before, after) = match name.as_str() {
            "transcoded" => mem_bridges(true),
            "passthrough" => mem_bridges(false),
            "rtp" => mem_rtp_calls(),
            "webrtc" => mem_webrtc_answers(),
            other => panic!("unknown memory measurement {other}"),
        };
        println!("MEM {n} {before} {after}");
        return;
    }

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: {cpus} × {}; {}; {RUNS} runs × {PER_RUN} call-seconds after {WARMUP} warm-up",
        cpu_model(),
        opus::version()
    );
    // Pre-built media (not timed): 10 s of distinct audio each way, replayed with
    // continuous seq/ts for all TOTAL call-seconds.
    let opus = stream(&browser_opus(AUDIO_SECS), 111, BROWSER_SSRC, 960);
    let pcmu = stream(&trunk_pcmu(AUDIO_SECS), 0, TRUNK_SSRC, 160);
    let opus_bytes: usize = opus
        .iter()
        .take(AUDIO_SECS * FRAMES)
        .map(|p| p.payload.len())
        .sum();
    let complexity = encoder_8k(None).get_complexity().expect("complexity");
    println!(
        "browser Opus: {:.1} kbit/s average payload; bridge encoder complexity {complexity} \
         (media::codec::OPUS_COMPLEXITY)",
        opus_bytes as f64 * 8.0 / AUDIO_SECS as f64 / 1000.0
    );

    let rows = [
        Row {
            what: "Opus↔PCMU transcoded, SRTP on the browser side (full path)",
            stats: transcoded_full(&opus, &pcmu),
        },
        Row {
            what: "  of which: bridge `on_packet` alone (decode + encode + re-stamp)",
            stats: transcoded_bridge_only(&opus, &pcmu),
        },
        Row {
            what: "  bare libopus: 50 decodes + 50 encodes at 8 kHz",
            stats: bare_libopus(&opus, &pcmu, Opus::Both),
        },
        Row {
            what: "    libopus decode only (browser's 32 kbit/s Opus → 8 kHz)",
            stats: bare_libopus(&opus, &pcmu, Opus::Decode),
        },
        Row {
            what: "    libopus encode only (8 kHz → NB Opus 20 kbit/s, FEC)",
            stats: bare_libopus(&opus, &pcmu, Opus::Encode(None)),
        },
        Row {
            what: "    the same encode at complexity 3",
            stats: bare_libopus(&opus, &pcmu, Opus::Encode(Some(3))),
        },
        Row {
            what: "    the same encode at complexity 9 (libopus' default)",
            stats: bare_libopus(&opus, &pcmu, Opus::Encode(Some(9))),
        },
        Row {
            what: "  SRTP alone: 50 unprotect + 50 protect",
            stats: srtp_only(&opus),
        },
        Row {
            what: "PCMU↔PCMU pass-through (parse + bridge + marshal, no SRTP)",
            stats: passthrough(&pcmu, true),
        },
        Row {
            what: "  of which: bridge `on_packet` alone",
            stats: passthrough(&pcmu, false),
        },
    ];
    println!();
    println!(
        "| per call-second (50 packets each way) | median | min | % of one core | calls per core |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        let m = us(r.stats.median);
        println!(
            "| {} | {:.1} µs | {:.1} µs | {:.4} % | {:.0} |",
            r.what,
            m,
            us(r.stats.min),
            m / 1e4,
            1e6 / m
        );
    }

    println!();
    println!("| memory per live call | calls | VmRSS growth | per call |");
    println!("|---|---|---|---|");
    for (name, what) in [
        ("transcoded", "`Bridge` Opus↔PCMU (codecs created)"),
        ("passthrough", "`Bridge` PCMU↔PCMU"),
        (
            "rtp",
            "`CallMedia::bridge` of two `RtpLeg`s (4 sockets + task)",
        ),
        ("webrtc", "`WebRtcLeg::answer` (answered, not connected)"),
    ] {
        match child_mem(name) {
            Some((n, before, after)) => println!(
                "| {what} | {n} | {} KiB | {:.1} KiB |",
                after.saturating_sub(before),
                after.saturating_sub(before) as f64 / n as f64
            ),
            None => println!("| {what} | – | failed | – |"),
        }
    }
}
