//! Per-leg call quality: RFC 3550 receive statistics (sequence tracking, loss, interarrival
//! jitter, RTCP report blocks), NTP timestamp and round-trip-time helpers, and a simplified
//! ITU-T G.107 E-model that turns delay, jitter and loss into a MOS estimate.
//!
//! These figures feed the RTCP receiver reports each leg sends and the quality columns of
//! the CDR, so that a bad call can be attributed to the browser side or the SIP side. All
//! functions take times as parameters (a `Duration` since the leg started, on the caller's
//! clock), which keeps them deterministic and testable.

use std::time::Duration;

/// RTP sequence numbers wrap at 2^16 (RFC 3550 A.1 `RTP_SEQ_MOD`).
const SEQ_MOD: u64 = 1 << 16;
/// A forward jump at least this large is not ordinary loss (RFC 3550 A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: u16 = 3000;
/// A backward step at most this large is a reordered packet (RFC 3550 A.1 `MAX_MISORDER`).
const MAX_MISORDER: u16 = 100;
/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Receive-side statistics of one RTP stream (RFC 3550 Appendix A.1, A.3 and A.8).
///
/// The first packet is taken as the base sequence (no probation: the leg has already been
/// authenticated by ICE/SRTP or by the SDP exchange). A jump of 3000 or more is treated as
/// the RFC does: the packet is not counted, and if the next packet continues from it the
/// source is considered restarted and the sequence is re-based. Counts from before a
/// re-base are carried over, so `received`, `expected` and `lost` cover the whole leg.
#[derive(Debug, Clone)]
pub struct RecvStats {
    clock_rate: u32,
    /// Whether any packet has been accepted yet.
    started: bool,
    base_seq: u16,
    max_seq: u16,
    /// Sequence-number wrap count, shifted (a multiple of 2^16).
    cycles: u64,
    /// The sequence that would confirm a large jump as a restart (`SEQ_MOD + 1` = none).
    bad_seq: u32,
    /// Packets counted since the last (re-)base.
    received: u64,
    /// Expected/received totals of segments before the last re-base.
    carried_expected: u64,
    carried_received: u64,
    /// Values at the previous report block (RFC 3550 A.3).
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the previous packet, in clock units (RFC 3550 A.8).
    transit: Option<u32>,
    /// Interarrival jitter in clock units, scaled by 16 (the A.8 fixed-point form).
    jitter_q4: u64,
}

/// The figures of one RTCP report block (RFC 3550 section 6.4.1) for this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// Fraction of packets lost since the previous report, in 1/256ths.
    pub fraction_lost: u8,
    /// Cumulative packets lost, clamped to the 24-bit field (negative counts, from
    /// duplicates, are reported as 0).
    pub total_lost: u32,
    /// Extended highest sequence number received (cycles in the high 16 bits).
    pub extended_max_seq: u32,
    /// Interarrival jitter in RTP clock units.
    pub jitter: u32,
}

impl RecvStats {
    /// Statistics for a stream whose RTP clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            started: false,
            base_seq: 0,
            max_seq: 0,
            cycles: 0,
            bad_seq: (SEQ_MOD + 1) as u32,
            received: 0,
            carried_expected: 0,
            carried_received: 0,
            expected_prior: 0,
            received_prior: 0,
            transit: None,
            jitter_q4: 0,
        }
    }

    /// (Re-)bases the sequence on `seq`, keeping the totals so far (RFC 3550 A.1 `init_seq`).
    fn init_seq(&mut self, seq: u16) {
        if self.started {
            self.carried_expected += self.segment_expected();
            self.carried_received += self.received;
        }
        self.started = true;
        self.base_seq = seq;
        self.max_seq = seq;
        self.bad_seq = (SEQ_MOD + 1) as u32;
        self.cycles = 0;
        self.received = 0;
        // A restarted source has a new timestamp base: the old transit means nothing.
        self.transit = None;
    }

    /// Records one received RTP packet: its sequence number, RTP timestamp and arrival time
    /// (since the leg started, on the caller's clock).
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival: Duration) {
        if !self.started {
            self.init_seq(seq);
        } else {
            // RFC 3550 A.1 update_seq.
            let udelta = seq.wrapping_sub(self.max_seq);
            if udelta < MAX_DROPOUT {
                // In order, with a permissible gap (or a duplicate of the highest).
                if seq < self.max_seq {
                    self.cycles += SEQ_MOD;
                }
                self.max_seq = seq;
            } else if u32::from(udelta) <= SEQ_MOD as u32 - u32::from(MAX_MISORDER) {
                // A very large jump: either a restarted sender or a stray packet. Two
                // sequential packets after the jump confirm a restart.
                if u32::from(seq) == self.bad_seq {
                    self.init_seq(seq);
                } else {
                    self.bad_seq = (u32::from(seq) + 1) & (SEQ_MOD as u32 - 1);
                    return;
                }
            }
            // else: a duplicate or reordered packet, counted but not advancing max_seq.
        }
        self.received += 1;
        self.update_jitter(rtp_ts, arrival);
    }

    /// RFC 3550 A.8: J += (|D| - J) / 16, kept in fixed point (J * 16).
    fn update_jitter(&mut self, rtp_ts: u32, arrival: Duration) {
        // Arrival in clock units; the wrap at 2^32 cancels out in the transit difference.
        let arrival_units =
            (arrival.as_nanos() * u128::from(self.clock_rate) / 1_000_000_000) as u32;
        let transit = arrival_units.wrapping_sub(rtp_ts);
        if let Some(prev) = self.transit {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            // jitter_q4 += d - jitter_q4/16, with rounding as in the RFC's integer example.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Expected packets since the last (re-)base.
    fn segment_expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        self.cycles + u64::from(self.max_seq) + 1 - u64::from(self.base_seq)
    }

    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub fn received(&self) -> u64 {
        self.carried_received + self.received
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        self.carried_expected + self.segment_expected()
    }

    /// Packets lost: expected minus received (negative when duplicates outnumber losses).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received() as i64
    }

    /// Interarrival jitter in RTP clock units.
    pub fn jitter_units(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(u32::MAX)
    }

    /// Interarrival jitter in milliseconds (0 for a zero clock rate).
    pub fn jitter_ms(&self) -> f64 {
        if self.clock_rate == 0 {
            return 0.0;
        }
        self.jitter_q4 as f64 / 16.0 * 1000.0 / f64::from(self.clock_rate)
    }

    /// Extended highest sequence number (wrap count in the high 16 bits).
    pub fn extended_max_seq(&self) -> u32 {
        (self.cycles + u64::from(self.max_seq)) as u32
    }

    /// The figures for the next RTCP report block; the fraction lost covers the interval
    /// since the previous call (RFC 3550 A.3).
    pub fn report_block(&mut self) -> ReportBlock {
        let expected = self.expected();
        let received = self.received();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            // lost <= expected, so the quotient is at most 256; 256 (all lost) saturates.
            u8::try_from(((lost_interval as u64) << 8) / expected_interval).unwrap_or(u8::MAX)
        };
        ReportBlock {
            fraction_lost,
            total_lost: self.lost().clamp(0, 0x7F_FFFF) as u32,
            extended_max_seq: self.extended_max_seq(),
            jitter: self.jitter_units(),
        }
    }
}

/// A 64-bit NTP timestamp (seconds since 1900 in the high 32 bits, binary fraction in the
/// low 32) for a wall-clock time given as the duration since the Unix epoch. The seconds
/// wrap in 2036 (NTP era 1), which RTCP tolerates since only differences are used.
pub fn ntp_timestamp(since_unix_epoch: Duration) -> u64 {
    let secs = since_unix_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET) & 0xFFFF_FFFF;
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (16.16 fixed-point seconds), the form used by
/// the LSR/DLSR fields and the RTT computation.
pub fn ntp_middle32(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Round-trip time per RFC 3550 section 6.4.1: `now - LSR - DLSR`, all in 1/65536 s.
/// `None` when no sender report has been received (`lsr == 0`) or the result would be
/// negative (clock trouble on either side).
pub fn rtt(now_middle32: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    // Wrapping arithmetic: the middle 32 bits roll over every 18 hours.
    let elapsed = now_middle32.wrapping_sub(lsr);
    if (elapsed as i32) < 0 || dlsr > elapsed {
        return None;
    }
    let units = u64::from(elapsed - dlsr);
    Some(Duration::from_nanos(units * 1_000_000_000 / 65_536))
}

/// Codec figures for the E-model's equipment impairment (ITU-T G.107 / G.113).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CodecImpairment {
    /// G.711 with packet-loss concealment.
    G711,
    /// Opus at VoIP bit rates.
    Opus,
}

impl CodecImpairment {
    /// `(Ie, Bpl)`: equipment impairment and packet-loss robustness.
    fn factors(self) -> (f64, f64) {
        match self {
            // ITU-T G.113 Appendix I, Table I.3: G.711 with PLC (G.711 Appendix I), random
            // loss: Ie = 0, Bpl = 25.1.
            CodecImpairment::G711 => (0.0, 25.1),
            // ITU-T G.113 tabulates no narrowband-scale values for Opus. At VoIP rates
            // (>= 16 kb/s) Opus scores at least as well as G.711 in listening tests
            // (Rämö & Toukomaa, "Voice quality characterization of IETF Opus codec",
            // Interspeech 2011), hence Ie = 0. For loss we take Bpl = 20.0, below G.711's
            // 25.1, as a conservative figure: a lost 20 ms Opus packet removes twice the
            // audio of a 10 ms G.711 packet and in-band FEC is not guaranteed to be on.
            // This is an engineering estimate, not a standardised value.
            CodecImpairment::Opus => (0.0, 20.0),
        }
    }
}

/// Default R-factor of the E-model with all other parameters at their G.107 defaults.
const R0_DEFAULT: f64 = 93.2;

/// Rounds to two decimals (the precision the CDR stores).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Mean opinion score estimate (1.0..=4.5, two decimals) from the simplified E-model used
/// by VoIP monitors (ITU-T G.107 with default parameters, Id and Ie-eff only).
pub fn mos(
    one_way_delay_ms: f64,
    jitter_ms: f64,
    loss_percent: f64,
    codec: CodecImpairment,
) -> f64 {
    // Jitter costs about twice its value in de-jitter buffering; 10 ms for codec framing.
    let d = one_way_delay_ms.max(0.0) + 2.0 * jitter_ms.max(0.0) + 10.0;
    // Delay impairment (the G.107 Idd curve approximated by two lines, knee at 177.3 ms).
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let (ie, bpl) = codec.factors();
    let ppl = loss_percent.clamp(0.0, 100.0);
    let ie_eff = ie + (95.0 - ie) * ppl / (ppl + bpl);
    mos_from_r(R0_DEFAULT - id - ie_eff)
}

/// The G.107 Annex B mapping from the R-factor (clamped to 0..=100) to MOS, clamped to
/// 1.0..=4.5 and rounded to two decimals.
pub fn mos_from_r(r: f64) -> f64 {
    let r = r.clamp(0.0, 100.0);
    let mos = 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r);
    round2(mos.clamp(1.0, 4.5))
}

/// The quality figures of one leg, as stored in the CDR.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LegQuality {
    /// RTP packets this side sent toward the peer.
    pub packets_sent: u64,
    /// RTP packets received from the peer.
    pub packets_received: u64,
    /// Packets lost on the way from the peer (negative counts clamped to 0).
    pub packets_lost: u64,
    /// `packets_lost` as a percentage of the expected packets, two decimals.
    pub loss_percent: f64,
    /// Interarrival jitter in milliseconds, two decimals.
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, in milliseconds, when known.
    pub rtt_ms: Option<f64>,
    /// E-model MOS estimate; `None` when nothing was received.
    pub mos: Option<f64>,
}

impl LegQuality {
    /// Summarises a leg from its receive statistics, its send count and the latest RTT.
    pub fn from_stats(
        recv: &RecvStats,
        packets_sent: u64,
        rtt: Option<Duration>,
        codec: CodecImpairment,
    ) -> Self {
        let received = recv.received();
        let expected = recv.expected();
        let lost = recv.lost().max(0) as u64;
        let loss_percent = if expected == 0 {
            0.0
        } else {
            round2(lost as f64 / expected as f64 * 100.0)
        };
        let jitter_ms = round2(recv.jitter_ms());
        let rtt_exact_ms = rtt.map(|r| r.as_secs_f64() * 1000.0);
        // Without RTCP we cannot know the network delay; assume none rather than guess.
        let one_way = rtt_exact_ms.map_or(0.0, |r| r / 2.0);
        let mos = (received > 0).then(|| mos(one_way, jitter_ms, loss_percent, codec));
        Self {
            packets_sent,
            packets_received: received,
            packets_lost: lost,
            loss_percent,
            jitter_ms,
            rtt_ms: rtt_exact_ms.map(round2),
            mos,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS20: Duration = Duration::from_millis(20);

    /// Feeds packets `seqs` with timestamps/arrivals exactly 20 ms apart per sequence step.
    fn feed(stats: &mut RecvStats, first_seq: u16, seqs: impl IntoIterator<Item = u16>) {
        for seq in seqs {
            let n = u32::from(seq.wrapping_sub(first_seq));
            stats.on_packet(seq, 1000 + n * 160, MS20 * n);
        }
    }

    #[test]
    fn perfect_stream_has_no_jitter_or_loss() {
        let mut s = RecvStats::new(8000);
        feed(&mut s, 0, 0..100);
        assert_eq!(s.received(), 100);
        assert_eq!(s.expected(), 100);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.jitter_units(), 0);
        assert_eq!(s.jitter_ms(), 0.0);
        assert_eq!(s.extended_max_seq(), 99);
        let rb = s.report_block();
        assert_eq!(
            rb,
            ReportBlock {
                fraction_lost: 0,
                total_lost: 0,
                extended_max_seq: 99,
                jitter: 0
            }
        );
        let q = LegQuality::from_stats(&s, 100, None, CodecImpairment::G711);
        assert_eq!(q.loss_percent, 0.0);
        assert_eq!(q.packets_lost, 0);
        assert_eq!(q.mos, Some(4.4));
    }

    #[test]
    fn every_tenth_packet_lost() {
        let mut s = RecvStats::new(8000);
        feed(&mut s, 0, (0..100).filter(|n| n % 10 != 5));
        assert_eq!(s.received(), 90);
        assert_eq!(s.expected(), 100);
        assert_eq!(s.lost(), 10);
        let rb = s.report_block();
        assert_eq!(rb.fraction_lost, 25); // 0.1 * 256 = 25.6, truncated
        assert_eq!(rb.total_lost, 10);
        // No new packets: the next interval has no loss.
        assert_eq!(s.report_block().fraction_lost, 0);
        let q = LegQuality::from_stats(&s, 100, None, CodecImpairment::G711);
        assert_eq!(q.loss_percent, 10.0);
        assert_eq!(q.packets_lost, 10);
        assert!(q.mos.unwrap() < 4.0);
    }

    #[test]
    fn sequence_wraps_around() {
        let mut s = RecvStats::new(8000);
        let first = 65_500u16;
        feed(&mut s, first, (0..100u16).map(|i| first.wrapping_add(i)));
        assert_eq!(s.received(), 100);
        assert_eq!(s.expected(), 100);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.extended_max_seq(), 65_536 + 63);
        assert_eq!(s.jitter_units(), 0);
    }

    #[test]
    fn reorder_and_duplicates() {
        let mut s = RecvStats::new(8000);
        feed(&mut s, 0, [0, 1, 3, 2, 4, 4, 5]);
        assert_eq!(s.expected(), 6);
        assert_eq!(s.received(), 7);
        assert_eq!(s.lost(), -1);
        let rb = s.report_block();
        assert_eq!(rb.total_lost, 0);
        assert_eq!(rb.fraction_lost, 0);
        let q = LegQuality::from_stats(&s, 0, None, CodecImpairment::G711);
        assert_eq!(q.packets_lost, 0);
        assert_eq!(q.loss_percent, 0.0);
    }

    #[test]
    fn large_jump_rebases_after_confirmation() {
        let mut s = RecvStats::new(8000);
        feed(&mut s, 0, 0..10);
        // A single stray packet far ahead is ignored.
        s.on_packet(40_000, 0, MS20 * 10);
        assert_eq!(s.received(), 10);
        s.on_packet(10, 1000 + 1600, MS20 * 10);
        assert_eq!(s.received(), 11);
        // A restarted sender: two sequential packets re-base the sequence.
        s.on_packet(20_000, 5, MS20 * 11);
        s.on_packet(20_001, 165, MS20 * 12);
        s.on_packet(20_002, 325, MS20 * 13);
        assert_eq!(s.extended_max_seq(), 20_002);
        // 11 before the restart, 2 counted after it (the confirming packet re-bases).
        assert_eq!(s.received(), 13);
        assert_eq!(s.expected(), 13);
        assert_eq!(s.lost(), 0);
        // The timestamp base changed; jitter did not explode.
        assert_eq!(s.jitter_units(), 0);
    }

    #[test]
    fn jitter_grows_with_arrival_noise() {
        let mut s = RecvStats::new(8000);
        // Deterministic noise: arrivals alternately 0 and +10 ms late.
        for n in 0..200u32 {
            let late = if n % 2 == 1 { 10 } else { 0 };
            let arrival = MS20 * n + Duration::from_millis(late);
            s.on_packet(n as u16, n * 160, arrival);
        }
        // |D| is always 80 units (10 ms); the A.8 filter converges to 80.
        assert!(
            (78..=80).contains(&s.jitter_units()),
            "{}",
            s.jitter_units()
        );
        assert!((s.jitter_ms() - 10.0).abs() < 0.3, "{}", s.jitter_ms());
        let mut quieter = RecvStats::new(8000);
        for n in 0..200u32 {
            let late = if n % 2 == 1 { 2 } else { 0 };
            quieter.on_packet(n as u16, n * 160, MS20 * n + Duration::from_millis(late));
        }
        assert!(quieter.jitter_units() < s.jitter_units());
        assert!(quieter.jitter_units() > 0);
    }

    #[test]
    fn ntp_and_rtt() {
        // The Unix epoch is NTP second 2208988800.
        assert_eq!(ntp_timestamp(Duration::ZERO), NTP_UNIX_OFFSET << 32);
        let half = ntp_timestamp(Duration::from_millis(1500));
        assert_eq!(half >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(half & 0xFFFF_FFFF, 0x8000_0000);
        assert_eq!(
            ntp_middle32(half),
            (((NTP_UNIX_OFFSET + 1) as u32) << 16) | 0x8000
        );

        // RFC 3550 figure 2 example: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
        // (46853.125 s), DLSR = 0x0005:4000 (5.250 s): RTT = 6.125 s.
        let r = rtt(0xB710_8000, 0xB705_2000, 0x0005_4000).unwrap();
        assert_eq!(r, Duration::from_millis(6125));
        assert_eq!(rtt(0xB710_8000, 0, 0x0005_4000), None);
        assert_eq!(rtt(0xB705_2000, 0xB705_2000, 1), None);
        assert_eq!(rtt(0xB705_0000, 0xB705_2000, 0), None);
        // Across the 16.16 wrap.
        let r = rtt(0x0000_1000, 0xFFFF_F000, 0x1000).unwrap();
        assert_eq!(r, Duration::from_nanos(0x1000 * 1_000_000_000 / 65_536));
    }

    #[test]
    fn mos_behaviour() {
        // R = 93.2 maps to 4.41; even perfect conditions carry the fixed 10 ms of
        // effective latency (R = 92.96), which rounds to 4.40.
        assert_eq!(mos_from_r(93.2), 4.41);
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos(0.0, 0.0, 0.0, CodecImpairment::G711), 4.4);
        let perfect = mos(20.0, 2.0, 0.0, CodecImpairment::G711);
        assert!((4.35..=4.45).contains(&perfect), "{perfect}");
        let lossy = mos(20.0, 2.0, 5.0, CodecImpairment::G711);
        assert!(lossy < perfect - 0.3, "{lossy}");
        let slow = mos(400.0, 2.0, 0.0, CodecImpairment::G711);
        assert!(slow < perfect - 0.5, "{slow}");
        // Opus is assumed less robust per lost packet than G.711 with PLC.
        assert!(mos(20.0, 2.0, 5.0, CodecImpairment::Opus) < lossy);
        let mut prev = f64::INFINITY;
        for tenth in 0..=300 {
            let m = mos(50.0, 5.0, f64::from(tenth) / 10.0, CodecImpairment::G711);
            assert!(m <= prev, "not monotone at {tenth}");
            assert!((1.0..=4.5).contains(&m));
            prev = m;
        }
        assert_eq!(mos(5000.0, 500.0, 100.0, CodecImpairment::Opus), 1.0);
    }

    #[test]
    fn leg_quality_figures() {
        let empty = LegQuality::from_stats(&RecvStats::new(8000), 5, None, CodecImpairment::G711);
        assert_eq!(empty.mos, None);
        assert_eq!(empty.packets_sent, 5);
        assert_eq!(empty.loss_percent, 0.0);

        let mut s = RecvStats::new(48_000);
        for n in 0..3u32 {
            s.on_packet(n as u16 * 2, n * 1920, MS20 * 2 * n); // every other packet lost
        }
        let q = LegQuality::from_stats(
            &s,
            7,
            Some(Duration::from_micros(123_456)),
            CodecImpairment::Opus,
        );
        assert_eq!(q.packets_received, 3);
        assert_eq!(q.packets_lost, 2);
        assert_eq!(q.loss_percent, 40.0);
        assert_eq!(q.rtt_ms, Some(123.46));
        assert!(q.mos.unwrap() < 3.0);
    }
}
