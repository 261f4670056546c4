//! The bridge between the two legs of a call (sans-IO).
//!
//! Packets from one leg go in with the instant they arrived; packets for the other leg
//! come out. In between:
//! - the same codec on both legs is passed through untouched (payload bytes copied), only
//!   re-stamped;
//! - different codecs are decoded to 8 kHz PCM (with concealment of lost packets, Opus
//!   FEC when the next packet is at hand) and encoded again in 20 ms frames;
//! - RFC 4733 telephone-events are re-stamped and their durations rescaled between the
//!   legs' clocks (48 kHz ↔ 8 kHz is ÷/× 6); each digit is reported once as an [`Event`];
//! - an injected [`AudioSource`] (ringback, an announcement) replaces what a leg hears
//!   while it plays; a muted leg is heard as silence.
//!
//! Every leg's outgoing stream keeps one SSRC and a sequence number that only goes up by
//! one for the whole call, whatever the other leg does (a new SSRC after a re-INVITE, a
//! hold of minutes): the timestamp jumps by the wall-clock time of the gap, so the far
//! end's jitter buffer and SRTP replay window both see one continuous stream.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;

use crate::codec::{Codec, Decoder, Encoder, FRAME_SAMPLES};
use crate::dtmf::{rescale_duration, Digit, DigitTracker, TelephoneEvent};
use crate::Result;

/// One of the two legs of a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller's leg (browser or desk phone).
    A,
    /// The far leg (trunk, desk phone, or nothing for the echo test).
    B,
}

impl Side {
    /// The other leg.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// What was negotiated on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegFormat {
    /// The audio codec.
    pub codec: Codec,
    /// Its payload type on this leg.
    pub pt: u8,
    /// telephone-event's payload type (at the codec's clock rate), if negotiated.
    pub dtmf_pt: Option<u8>,
}

/// Audio played into a leg in place of the bridged audio: 8 kHz mono PCM, 20 ms at a time.
pub trait AudioSource: Send + fmt::Debug {
    /// Fills `frame` (160 samples). Returns false when the source has finished.
    fn next_frame(&mut self, frame: &mut [i16]) -> bool;
}

/// A tone with an on/off cadence: ringback (440+480 Hz, 2 s on, 4 s off), a test tone.
#[derive(Debug, Clone)]
pub struct Tone {
    freqs: Vec<f64>,
    amplitude: f64,
    on_samples: u64,
    period_samples: u64,
    total_samples: Option<u64>,
    n: u64,
}

impl Tone {
    /// A continuous tone of `freqs` (summed), at `amplitude` (0.0–1.0 of full scale),
    /// for `total` (or forever).
    pub fn new(freqs: &[f64], amplitude: f64, total: Option<Duration>) -> Self {
        Self {
            freqs: freqs.to_vec(),
            amplitude: amplitude.clamp(0.0, 1.0),
            on_samples: u64::MAX,
            period_samples: u64::MAX,
            total_samples: total.map(|t| t.as_millis() as u64 * 8),
            n: 0,
        }
    }

    /// The North American ringback tone: 440 + 480 Hz, 2 s on, 4 s off, until replaced.
    pub fn ringback() -> Self {
        Self {
            on_samples: 16_000,
            period_samples: 48_000,
            ..Self::new(&[440.0, 480.0], 0.2, None)
        }
    }
}

impl AudioSource for Tone {
    fn next_frame(&mut self, frame: &mut [i16]) -> bool {
        if self.total_samples.is_some_and(|t| self.n >= t) {
            return false;
        }
        let per_tone = self.amplitude * 32767.0 / self.freqs.len().max(1) as f64;
        for s in frame.iter_mut() {
            let on = self.n % self.period_samples < self.on_samples;
            let t = self.n as f64 / 8000.0;
            let v: f64 = if on {
                self.freqs
                    .iter()
                    .map(|f| (2.0 * std::f64::consts::PI * f * t).sin() * per_tone)
                    .sum()
            } else {
                0.0
            };
            *s = v as i16;
            self.n += 1;
        }
        true
    }
}

/// A recorded announcement (8 kHz PCM), played once.
#[derive(Debug, Clone)]
pub struct Clip {
    pcm: Vec<i16>,
    pos: usize,
}

impl Clip {
    /// A clip of 8 kHz mono samples.
    pub fn new(pcm: Vec<i16>) -> Self {
        Self { pcm, pos: 0 }
    }
}

impl AudioSource for Clip {
    fn next_frame(&mut self, frame: &mut [i16]) -> bool {
        if self.pos >= self.pcm.len() {
            return false;
        }
        let end = (self.pos + frame.len()).min(self.pcm.len());
        let n = end - self.pos;
        frame[..n].copy_from_slice(&self.pcm[self.pos..end]);
        frame[n..].fill(0);
        self.pos = end;
        true
    }
}

/// Something the bridge noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A DTMF digit finished on leg `from` (durations on that leg's clock).
    Digit {
        /// The leg that sent it.
        from: Side,
        /// The digit and its duration.
        digit: Digit,
    },
    /// The source playing into leg `to` has finished.
    SourceDone {
        /// The leg it played to.
        to: Side,
    },
}

/// A packet to send on leg `to`.
#[derive(Debug, Clone)]
pub struct Transmit {
    /// The leg.
    pub to: Side,
    /// The packet, stamped for that leg.
    pub packet: Packet,
}

/// Counters of what crossed the bridge, for tests, logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets copied without decoding.
    pub passed: u64,
    /// Frames decoded and encoded again.
    pub transcoded: u64,
    /// Lost frames filled by concealment or FEC.
    pub concealed: u64,
    /// telephone-event packets translated.
    pub dtmf: u64,
    /// Late, duplicate or undecodable packets dropped.
    pub dropped: u64,
}

/// The longest gap (in packets) we conceal; beyond it the stream restarted.
const MAX_CONCEAL: u16 = 5;
/// A silence longer than this is a gap in the outgoing timeline (hold, mute upstream).
const GAP: Duration = Duration::from_millis(60);

#[derive(Debug)]
struct PassMap {
    ssrc: u32,
    seq_off: u16,
    ts_off: u32,
    last_in_seq: u16,
}

#[derive(Debug)]
struct Inbound {
    fmt: LegFormat,
    decoder: Option<Decoder>,
    ssrc: Option<u32>,
    last_seq: Option<u16>,
    tracker: DigitTracker,
    muted: bool,
    pcm: Vec<i16>,
}

#[derive(Debug)]
struct OutEvent {
    in_ts: u32,
    out_ts: u32,
}

#[derive(Debug)]
struct Outbound {
    fmt: LegFormat,
    ssrc: u32,
    seq: u16,
    ts: u32,
    last_sent: Option<Instant>,
    encoder: Option<Encoder>,
    buf: Vec<u8>,
    pass: Option<PassMap>,
    event: Option<OutEvent>,
    source: Option<Box<dyn AudioSource>>,
}

impl Outbound {
    fn new(fmt: LegFormat) -> Self {
        Self {
            fmt,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
            last_sent: None,
            encoder: None,
            buf: Vec::with_capacity(256),
            pass: None,
            event: None,
            source: None,
        }
    }

    /// Moves the timeline over a gap in what we sent: the timestamp advances by the wall
    /// time that passed (in whole frames), the sequence number does not.
    fn catch_up(&mut self, now: Instant) {
        if let Some(last) = self.last_sent {
            let gap = now.saturating_duration_since(last);
            if gap > GAP {
                let frames = (gap.as_millis() / 20) as u32;
                let units = self.fmt.codec.frame_units();
                self.ts = self
                    .ts
                    .wrapping_add(frames.saturating_sub(1).wrapping_mul(units));
            }
        }
    }

    fn header(&mut self, pt: u8, marker: bool, ts: u32) -> Header {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: self.ssrc,
            ..Default::default()
        }
    }

    /// Stamps one 20 ms audio frame.
    fn audio_packet(&mut self, now: Instant, payload: Bytes) -> Packet {
        self.catch_up(now);
        let marker = self
            .last_sent
            .is_none_or(|l| now.saturating_duration_since(l) > GAP);
        let ts = self.ts;
        self.ts = self.ts.wrapping_add(self.fmt.codec.frame_units());
        self.last_sent = Some(now);
        let pt = self.fmt.pt;
        Packet {
            header: self.header(pt, marker, ts),
            payload,
        }
    }

    fn encode(&mut self, now: Instant, pcm: &[i16]) -> Result<Packet> {
        if self.encoder.is_none() {
            self.encoder = Some(Encoder::new(self.fmt.codec)?);
        }
        if let Some(enc) = self.encoder.as_mut() {
            enc.encode(pcm, &mut self.buf)?;
        }
        let payload = Bytes::copy_from_slice(&self.buf);
        Ok(self.audio_packet(now, payload))
    }
}

#[derive(Debug)]
struct Leg {
    inb: Inbound,
    out: Outbound,
}

/// The bridge of one call. See the module documentation.
#[derive(Debug)]
pub struct Bridge {
    legs: [Leg; 2],
    echo: Option<(usize, VecDeque<Vec<i16>>)>,
    events: VecDeque<Event>,
    counters: Counters,
    frame: Vec<i16>,
}

impl Bridge {
    /// A bridge between leg A and leg B.
    pub fn new(a: LegFormat, b: LegFormat) -> Self {
        Self {
            legs: [Self::leg(a), Self::leg(b)],
            echo: None,
            events: VecDeque::new(),
            counters: Counters::default(),
            frame: vec![0; FRAME_SAMPLES],
        }
    }

    /// The echo test: leg A hears what it sent, `delay` later. Leg B is unused.
    pub fn echo(a: LegFormat, delay: Duration) -> Self {
        let mut bridge = Self::new(a, a);
        let frames = (delay.as_millis() / 20).max(1) as usize;
        bridge.echo = Some((frames, VecDeque::with_capacity(frames + 4)));
        bridge
    }

    fn leg(fmt: LegFormat) -> Leg {
        Leg {
            inb: Inbound {
                fmt,
                decoder: None,
                ssrc: None,
                last_seq: None,
                tracker: DigitTracker::new(fmt.codec.clock_rate()),
                muted: false,
                pcm: Vec::with_capacity(FRAME_SAMPLES * 2),
            },
            out: Outbound::new(fmt),
        }
    }

    /// Whether audio crosses without transcoding.
    pub fn is_passthrough(&self) -> bool {
        self.echo.is_none() && self.legs[0].inb.fmt.codec == self.legs[1].out.fmt.codec
    }

    /// The SSRC of the stream we send on `side`.
    pub fn ssrc(&self, side: Side) -> u32 {
        self.legs[side.index()].out.ssrc
    }

    /// What crossed so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Changes what a leg negotiated (a re-INVITE). The outgoing stream keeps its SSRC,
    /// sequence and timeline.
    pub fn set_format(&mut self, side: Side, fmt: LegFormat) {
        let leg = &mut self.legs[side.index()];
        if leg.inb.fmt != fmt {
            leg.inb.fmt = fmt;
            leg.inb.decoder = None;
            leg.inb.tracker = DigitTracker::new(fmt.codec.clock_rate());
            leg.out.fmt = fmt;
            leg.out.encoder = None;
            leg.out.pass = None;
        }
    }

    /// Mutes (or unmutes) what `side` sends: the other leg hears silence.
    pub fn set_muted(&mut self, side: Side, muted: bool) {
        self.legs[side.index()].inb.muted = muted;
    }

    /// Plays `source` into leg `to` in place of the bridged audio (None stops it).
    pub fn set_source(&mut self, to: Side, source: Option<Box<dyn AudioSource>>) {
        self.legs[to.index()].out.source = source;
    }

    /// Whether [`Bridge::on_tick`] must be called every 20 ms (a source plays, or echo).
    pub fn needs_tick(&self) -> bool {
        self.echo.is_some() || self.legs.iter().any(|l| l.out.source.is_some())
    }

    /// The next thing the bridge noticed.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A packet arrived on leg `from`; appends what to send to `out`.
    pub fn on_packet(&mut self, from: Side, packet: Packet, now: Instant, out: &mut Vec<Transmit>) {
        let fmt = self.legs[from.index()].inb.fmt;
        let pt = packet.header.payload_type;
        if Some(pt) == fmt.dtmf_pt {
            self.on_dtmf(from, &packet, now, out);
        } else if pt == fmt.pt {
            if let Err(e) = self.on_audio(from, packet, now, out) {
                tracing::debug!(error = %e, "undecodable audio dropped");
                self.counters.dropped += 1;
            }
        } else {
            // Comfort noise or a payload type that was not negotiated: nothing to bridge.
            self.counters.dropped += 1;
        }
    }

    /// The 20 ms clock: plays sources and the echo.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Transmit>) {
        for side in [Side::A, Side::B] {
            let out_leg = &mut self.legs[side.index()].out;
            let Some(source) = out_leg.source.as_mut() else {
                continue;
            };
            if source.next_frame(&mut self.frame) {
                match out_leg.encode(now, &self.frame) {
                    Ok(packet) => out.push(Transmit { to: side, packet }),
                    Err(e) => tracing::debug!(error = %e, "source frame not encoded"),
                }
            } else {
                out_leg.source = None;
                self.events.push_back(Event::SourceDone { to: side });
            }
        }
        if let Some((delay, queue)) = self.echo.as_mut() {
            if queue.len() > *delay {
                if let Some(frame) = queue.pop_front() {
                    let out_leg = &mut self.legs[0].out;
                    if out_leg.source.is_none() {
                        match out_leg.encode(now, &frame) {
                            Ok(packet) => out.push(Transmit {
                                to: Side::A,
                                packet,
                            }),
                            Err(e) => tracing::debug!(error = %e, "echo frame not encoded"),
                        }
                    }
                }
            }
        }
    }

    /// Ends the call: reports a digit still held down.
    pub fn finish(&mut self) {
        for side in [Side::A, Side::B] {
            if let Some(digit) = self.legs[side.index()].inb.tracker.flush() {
                self.events.push_back(Event::Digit { from: side, digit });
            }
        }
    }

    fn on_dtmf(&mut self, from: Side, packet: &Packet, now: Instant, out: &mut Vec<Transmit>) {
        let Ok(ev) = TelephoneEvent::parse(&packet.payload) else {
            self.counters.dropped += 1;
            return;
        };
        let in_fmt = self.legs[from.index()].inb.fmt;
        if let Some(digit) = self.legs[from.index()]
            .inb
            .tracker
            .on_packet(packet.header.timestamp, &ev)
        {
            self.events.push_back(Event::Digit { from, digit });
        }
        if self.echo.is_some() {
            return;
        }
        let to = from.other();
        let o = &mut self.legs[to.index()].out;
        let Some(out_pt) = o.fmt.dtmf_pt else {
            // The far leg did not negotiate telephone-event: the digit is reported, not sent.
            return;
        };
        let in_ts = packet.header.timestamp;
        let out_ts = match &o.event {
            Some(e) if e.in_ts == in_ts => e.out_ts,
            _ => {
                o.catch_up(now);
                let ts = o.ts;
                o.event = Some(OutEvent { in_ts, out_ts: ts });
                ts
            }
        };
        let duration = rescale_duration(
            ev.duration,
            in_fmt.codec.clock_rate(),
            o.fmt.codec.clock_rate(),
        );
        if ev.end {
            // Audio after the digit must not overlap it on the far leg's timeline.
            let after = out_ts.wrapping_add(u32::from(duration));
            if (after.wrapping_sub(o.ts) as i32) > 0 {
                o.ts = after;
            }
        }
        o.last_sent = Some(now);
        let translated = TelephoneEvent { duration, ..ev };
        let header = o.header(out_pt, packet.header.marker, out_ts);
        out.push(Transmit {
            to,
            packet: Packet {
                header,
                payload: Bytes::copy_from_slice(&translated.to_bytes()),
            },
        });
        self.counters.dtmf += 1;
    }

    fn on_audio(
        &mut self,
        from: Side,
        packet: Packet,
        now: Instant,
        out: &mut Vec<Transmit>,
    ) -> Result<()> {
        let to = if self.echo.is_some() {
            Side::A
        } else {
            from.other()
        };
        let seq = packet.header.sequence_number;
        let ssrc = packet.header.ssrc;
        let inb = &mut self.legs[from.index()].inb;
        // Where this packet sits in the incoming stream.
        let lost = match (inb.ssrc, inb.last_seq) {
            (Some(s), Some(last)) if s == ssrc => {
                let d = seq.wrapping_sub(last);
                if d == 0 || d > 0x8000 {
                    // A duplicate or a packet that arrives after we concealed it.
                    self.counters.dropped += 1;
                    return Ok(());
                }
                if d - 1 <= MAX_CONCEAL {
                    d - 1
                } else {
                    0
                }
            }
            _ => 0,
        };
        inb.ssrc = Some(ssrc);
        inb.last_seq = Some(seq);

        if self.echo.is_none()
            && inb.fmt.codec == self.legs[to.index()].out.fmt.codec
            && self.legs[to.index()].out.source.is_none()
        {
            self.pass_through(from, to, packet, now, out);
            return Ok(());
        }

        let inb = &mut self.legs[from.index()].inb;
        if inb.decoder.is_none() {
            inb.decoder = Some(Decoder::new(inb.fmt.codec)?);
        }
        let Some(decoder) = inb.decoder.as_mut() else {
            return Ok(());
        };
        for i in 0..lost {
            // The last lost frame can be rebuilt from the FEC data in this packet.
            let next = (i + 1 == lost).then_some(&packet.payload[..]);
            decoder.conceal(next, &mut inb.pcm)?;
            self.counters.concealed += 1;
        }
        decoder.decode(&packet.payload, &mut inb.pcm)?;
        if inb.muted {
            inb.pcm.fill(0);
        }
        let mut taken = 0;
        while inb.pcm.len() - taken >= FRAME_SAMPLES {
            let frame = &inb.pcm[taken..taken + FRAME_SAMPLES];
            taken += FRAME_SAMPLES;
            if let Some((_, queue)) = self.echo.as_mut() {
                queue.push_back(frame.to_vec());
                // Bounded: a peer that floods us cannot grow the queue without limit.
                if queue.len() > 250 {
                    queue.pop_front();
                }
                continue;
            }
            let o = &mut self.legs[to.index()].out;
            if o.source.is_some() {
                continue;
            }
            let pkt = o.encode(now, frame)?;
            self.counters.transcoded += 1;
            out.push(Transmit { to, packet: pkt });
        }
        inb.pcm.drain(..taken);
        Ok(())
    }

    fn pass_through(
        &mut self,
        from: Side,
        to: Side,
        mut packet: Packet,
        now: Instant,
        out: &mut Vec<Transmit>,
    ) {
        let muted = self.legs[from.index()].inb.muted;
        let codec = self.legs[from.index()].inb.fmt.codec;
        let o = &mut self.legs[to.index()].out;
        let in_seq = packet.header.sequence_number;
        let in_ts = packet.header.timestamp;
        let rebase = match &o.pass {
            Some(p) => {
                p.ssrc != packet.header.ssrc
                    || in_seq.wrapping_sub(p.last_in_seq) > 100
                        && in_seq.wrapping_sub(p.last_in_seq) < 0xff00
            }
            None => true,
        };
        if rebase {
            o.catch_up(now);
            o.pass = Some(PassMap {
                ssrc: packet.header.ssrc,
                seq_off: o.seq.wrapping_sub(in_seq),
                ts_off: o.ts.wrapping_sub(in_ts),
                last_in_seq: in_seq,
            });
        }
        let Some(map) = o.pass.as_mut() else { return };
        let out_seq = in_seq.wrapping_add(map.seq_off);
        let out_ts = in_ts.wrapping_add(map.ts_off);
        if (in_seq.wrapping_sub(map.last_in_seq) as i16) > 0 {
            map.last_in_seq = in_seq;
            o.seq = out_seq.wrapping_add(1);
            o.ts = out_ts.wrapping_add(o.fmt.codec.frame_units());
        }
        o.last_sent = Some(now);
        if muted {
            match codec.law() {
                Some(law) => {
                    packet.payload = Bytes::from(vec![law.silence(); packet.payload.len()])
                }
                // Opus silence would need an encoder; a muted Opus stream simply pauses.
                None => return,
            }
        }
        packet.header = Header {
            version: 2,
            marker: packet.header.marker || rebase,
            payload_type: o.fmt.pt,
            sequence_number: out_seq,
            timestamp: out_ts,
            ssrc: o.ssrc,
            ..Default::default()
        };
        self.counters.passed += 1;
        out.push(Transmit { to, packet });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::srtp::{SdesCrypto, SrtpSession, Suite};
    use rtc::shared::marshal::Marshal;

    const PCMU: LegFormat = LegFormat {
        codec: Codec::Pcmu,
        pt: 0,
        dtmf_pt: Some(101),
    };
    const OPUS: LegFormat = LegFormat {
        codec: Codec::Opus,
        pt: 111,
        dtmf_pt: Some(126),
    };

    /// A stream of 20 ms packets as a peer would send them.
    struct Peer {
        fmt: LegFormat,
        ssrc: u32,
        seq: u16,
        ts: u32,
        enc: Encoder,
        n: u64,
    }

    impl Peer {
        fn new(fmt: LegFormat) -> Self {
            Self {
                fmt,
                ssrc: rand::random(),
                seq: rand::random(),
                ts: rand::random(),
                enc: Encoder::new(fmt.codec).unwrap(),
                n: 0,
            }
        }

        fn next(&mut self) -> Packet {
            let pcm: Vec<i16> = (0..FRAME_SAMPLES as u64)
                .map(|i| {
                    let t = (self.n * FRAME_SAMPLES as u64 + i) as f64 / 8000.0;
                    ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 8000.0) as i16
                })
                .collect();
            self.n += 1;
            let mut payload = Vec::new();
            self.enc.encode(&pcm, &mut payload).unwrap();
            let p = Packet {
                header: Header {
                    version: 2,
                    payload_type: self.fmt.pt,
                    sequence_number: self.seq,
                    timestamp: self.ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: payload.into(),
            };
            self.seq = self.seq.wrapping_add(1);
            self.ts = self.ts.wrapping_add(self.fmt.codec.frame_units());
            p
        }

        /// What a phone does after a re-INVITE: a new SSRC and sequence.
        fn restart(&mut self) {
            self.ssrc = rand::random();
            self.seq = rand::random();
            self.ts = rand::random();
        }
    }

    /// Receives one leg's output through SRTP with replay protection, checking the stream
    /// stays one continuous stream.
    struct Far {
        tx: SrtpSession,
        rx: SrtpSession,
        last: Option<(u32, u16, u32)>,
        packets: u64,
        max_ts_jump: u32,
    }

    impl Far {
        fn new() -> Self {
            let ours = SdesCrypto::generate(1, Suite::Aes128Sha1_80);
            let theirs = SdesCrypto::generate(1, Suite::Aes128Sha1_80);
            Self {
                tx: SrtpSession::new(&ours, &theirs).unwrap(),
                rx: SrtpSession::new(&theirs, &ours).unwrap(),
                last: None,
                packets: 0,
                max_ts_jump: 0,
            }
        }

        fn receive(&mut self, p: &Packet) {
            let wire = self.tx.protect_rtp(&p.marshal().unwrap()).unwrap();
            self.rx
                .unprotect_rtp(&wire)
                .expect("no SRTP replay or authentication drop");
            let h = &p.header;
            if let Some((ssrc, seq, ts)) = self.last {
                assert_eq!(h.ssrc, ssrc, "one SSRC for the whole call");
                assert_eq!(h.sequence_number, seq.wrapping_add(1), "sequence +1");
                let jump = h.timestamp.wrapping_sub(ts);
                assert!(jump > 0 && jump < 0x8000_0000, "timestamp moves forward");
                self.max_ts_jump = self.max_ts_jump.max(jump);
            }
            self.last = Some((h.ssrc, h.sequence_number, h.timestamp));
            self.packets += 1;
        }
    }

    fn run_two_way(
        bridge: &mut Bridge,
        a: &mut Peer,
        b: &mut Peer,
        far_a: &mut Far,
        far_b: &mut Far,
        now: &mut Instant,
        secs: u64,
    ) {
        let mut out = Vec::new();
        for _ in 0..secs * 50 {
            *now += Duration::from_millis(20);
            bridge.on_packet(Side::A, a.next(), *now, &mut out);
            bridge.on_packet(Side::B, b.next(), *now, &mut out);
            for t in out.drain(..) {
                match t.to {
                    Side::A => far_a.receive(&t.packet),
                    Side::B => far_b.receive(&t.packet),
                }
            }
        }
    }

    #[test]
    fn a_long_hold_and_a_new_ssrc_keep_both_streams_continuous() {
        for (fa, fb, passthrough) in [(OPUS, PCMU, false), (PCMU, PCMU, true)] {
            let mut bridge = Bridge::new(fa, fb);
            assert_eq!(bridge.is_passthrough(), passthrough);
            let (mut a, mut b) = (Peer::new(fa), Peer::new(fb));
            let (mut far_a, mut far_b) = (Far::new(), Far::new());
            let mut now = Instant::now();
            run_two_way(
                &mut bridge,
                &mut a,
                &mut b,
                &mut far_a,
                &mut far_b,
                &mut now,
                10,
            );
            // Five minutes of hold: nothing flows either way (the browser's RTP clock
            // keeps running).
            now += Duration::from_secs(300);
            a.ts = a.ts.wrapping_add(300 * fa.codec.clock_rate());
            // The phone comes back from the re-INVITE with a new SSRC and sequence; the
            // browser carries on with its own.
            b.restart();
            run_two_way(
                &mut bridge,
                &mut a,
                &mut b,
                &mut far_a,
                &mut far_b,
                &mut now,
                10,
            );
            for far in [&far_a, &far_b] {
                // Only a few packets short of 20 s each way (the Opus decoder's first
                // frames), none refused by SRTP, and the timeline jumped by the hold.
                assert!(far.packets >= 990, "{} packets", far.packets);
            }
            assert!(far_b.max_ts_jump >= 300 * 8000, "{}", far_b.max_ts_jump);
            let a_rate = fa.codec.clock_rate();
            assert!(far_a.max_ts_jump >= 300 * a_rate, "{}", far_a.max_ts_jump);
            let c = bridge.counters();
            assert_eq!(c.dropped, 0, "{c:?}");
            if passthrough {
                assert_eq!(c.transcoded, 0);
                assert_eq!(c.passed, 2000);
            }
        }
    }

    #[test]
    fn pass_through_copies_payload_bytes() {
        let mut bridge = Bridge::new(PCMU, LegFormat { pt: 0, ..PCMU });
        let mut a = Peer::new(PCMU);
        let mut out = Vec::new();
        let p = a.next();
        bridge.on_packet(Side::A, p.clone(), Instant::now(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, Side::B);
        assert_eq!(out[0].packet.payload, p.payload);
        assert_eq!(out[0].packet.header.ssrc, bridge.ssrc(Side::B));
        assert_ne!(out[0].packet.header.ssrc, p.header.ssrc);
        // Muted: same size, µ-law silence.
        bridge.set_muted(Side::A, true);
        out.clear();
        bridge.on_packet(Side::A, a.next(), Instant::now(), &mut out);
        assert!(out[0].packet.payload.iter().all(|b| *b == 0xFF));
    }

    #[test]
    fn a_lost_opus_packet_is_concealed_and_duplicates_dropped() {
        let mut bridge = Bridge::new(OPUS, PCMU);
        let mut a = Peer::new(OPUS);
        let mut out = Vec::new();
        let now = Instant::now();
        for _ in 0..5 {
            bridge.on_packet(Side::A, a.next(), now, &mut out);
        }
        let _lost = a.next();
        let after = a.next();
        bridge.on_packet(Side::A, after.clone(), now, &mut out);
        bridge.on_packet(Side::A, after, now, &mut out);
        let c = bridge.counters();
        assert_eq!(c.concealed, 1);
        assert_eq!(c.dropped, 1);
        // 5 + 1 concealed + 1 = 7 frames of PCMU, contiguous.
        assert_eq!(out.len(), 7);
        for w in out.windows(2) {
            let d = w[1]
                .packet
                .header
                .sequence_number
                .wrapping_sub(w[0].packet.header.sequence_number);
            assert_eq!(d, 1);
        }
    }

    #[test]
    fn a_source_replaces_bridged_audio_until_it_ends() {
        let mut bridge = Bridge::new(OPUS, PCMU);
        bridge.set_source(
            Side::B,
            Some(Box::new(Tone::new(
                &[440.0],
                0.3,
                Some(Duration::from_millis(100)),
            ))),
        );
        assert!(bridge.needs_tick());
        let mut a = Peer::new(OPUS);
        let mut out = Vec::new();
        let mut now = Instant::now();
        for _ in 0..10 {
            now += Duration::from_millis(20);
            bridge.on_packet(Side::A, a.next(), now, &mut out);
            bridge.on_tick(now, &mut out);
        }
        // 5 tone frames (100 ms), then the bridged audio again.
        assert_eq!(bridge.poll_event(), Some(Event::SourceDone { to: Side::B }));
        assert!(!bridge.needs_tick());
        assert!(out.iter().all(|t| t.to == Side::B));
        assert!(out.len() >= 9, "{}", out.len());
    }

    #[test]
    fn echo_plays_back_after_the_delay() {
        let mut bridge = Bridge::echo(PCMU, Duration::from_millis(100));
        let mut a = Peer::new(PCMU);
        let mut out = Vec::new();
        let mut now = Instant::now();
        let mut first_echo = None;
        for i in 0..20 {
            now += Duration::from_millis(20);
            bridge.on_packet(Side::A, a.next(), now, &mut out);
            bridge.on_tick(now, &mut out);
            if first_echo.is_none() && !out.is_empty() {
                first_echo = Some(i);
            }
        }
        assert_eq!(first_echo, Some(5), "100 ms = 5 frames of delay");
        assert!(out.iter().all(|t| t.to == Side::A));
        assert_eq!(out.len(), 15);
    }

    #[test]
    fn ringback_has_its_cadence() {
        let mut tone = Tone::ringback();
        let mut frame = vec![0i16; FRAME_SAMPLES];
        let mut energy = Vec::new();
        for _ in 0..300 {
            assert!(tone.next_frame(&mut frame));
            energy.push(frame.iter().map(|s| (*s as i64).abs()).sum::<i64>());
        }
        // 2 s on (100 frames), 4 s off (200 frames).
        assert!(energy[..100].iter().all(|e| *e > 0));
        assert!(energy[100..300].iter().all(|e| *e == 0));
    }
}
