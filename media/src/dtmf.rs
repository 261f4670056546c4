//! DTMF as RFC 4733 telephone-events: the 4-byte payload, digit naming, clock-rate
//! rescaling, a receive-side tracker that turns packets into digits, and a send-side
//! generator that turns a digit into packets.
//!
//! Both legs of a call carry DTMF out of band, but at different RTP clock rates (8 kHz for
//! SIP `telephone-event/8000`, 48 kHz for WebRTC `telephone-event/48000`), and the protocol
//! is deliberately redundant (cumulative durations, three end packets), so the bridge needs
//! to collapse a burst of packets into exactly one digit and regenerate a correct burst on
//! the other side rather than forwarding packets blindly.

use crate::{Error, Result};

/// One RFC 4733 telephone-event payload (section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-9, 10 = `*`, 11 = `#`, 12-15 = A-D for DTMF).
    pub event: u8,
    /// The E bit: this packet reports the end of the event.
    pub end: bool,
    /// Power level in -dBm0, 0..=63 (only the low 6 bits are meaningful).
    pub volume: u8,
    /// Duration so far, in RTP clock units, counted from the event's RTP timestamp.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses a payload; trailing bytes (e.g. RFC 2198 redundancy already stripped by the
    /// caller, or padding) are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(Error::malformed(
                "telephone-event",
                format!("payload is {} bytes, need at least 4", payload.len()),
            ));
        };
        Ok(Self {
            event,
            end: flags & 0x80 != 0,
            // The R bit (0x40) is reserved: senders must send 0, receivers must ignore it.
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// Serialises the payload (the R bit is always sent as 0, the volume is masked to 6 bits).
    pub fn to_bytes(&self) -> [u8; 4] {
        let flags = if self.end { 0x80 } else { 0 } | (self.volume & 0x3F);
        let [d0, d1] = self.duration.to_be_bytes();
        [self.event, flags, d0, d1]
    }
}

/// The character of a DTMF event code, `None` for non-DTMF events (flash, tones, ...).
pub fn digit_char(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The event code of a DTMF character (lower-case `a`-`d` accepted), `None` otherwise.
pub fn event_for_char(c: char) -> Option<u8> {
    match c {
        '0'..='9' => Some(c as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(c as u8 - b'A' + 12),
        'a'..='d' => Some(c as u8 - b'a' + 12),
        _ => None,
    }
}

/// Converts `value` from one RTP clock rate to another, rounded to the nearest unit and
/// saturating at `u32::MAX`. A zero `from_rate` (a misconfigured clock) returns `value`.
pub fn rescale(value: u32, from_rate: u32, to_rate: u32) -> u32 {
    if from_rate == 0 {
        return value;
    }
    // u64 so that value * to_rate cannot overflow (both are at most 2^32).
    let from = u64::from(from_rate);
    let scaled = (u64::from(value) * u64::from(to_rate) + from / 2) / from;
    u32::try_from(scaled).unwrap_or(u32::MAX)
}

/// [`rescale`] for a telephone-event duration field, saturating at `u16::MAX` (an 8 kHz
/// duration above 10922 does not fit at 48 kHz; a saturated duration is still a long press).
pub fn rescale_duration(d: u16, from_rate: u32, to_rate: u32) -> u16 {
    u16::try_from(rescale(u32::from(d), from_rate, to_rate)).unwrap_or(u16::MAX)
}

/// A digit the far end pressed, as reported by [`DigitTracker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digit {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// How long it was held, in RTP clock units.
    pub duration: u16,
    /// The clock rate `duration` is expressed in.
    pub clock_rate: u32,
}

impl Digit {
    /// The duration in milliseconds, rounded to the nearest (0 for a zero clock rate).
    pub fn duration_ms(&self) -> u32 {
        if self.clock_rate == 0 {
            return 0;
        }
        rescale(u32::from(self.duration), self.clock_rate, 1000)
    }
}

/// The event currently being received and not yet reported.
#[derive(Debug, Clone, Copy)]
struct ActiveEvent {
    digit: char,
    duration: u16,
}

/// Turns received telephone-event packets into digits, each reported exactly once.
///
/// RFC 4733 identifies an event by its RTP timestamp: every packet of one key press carries
/// the same timestamp with a growing duration, and the end is sent three times. A digit is
/// reported on its first end packet; if a new timestamp starts while the previous event
/// never ended (all its end packets lost), the previous one is reported with the last
/// duration seen. Packets older than the latest event (late redundant copies) are ignored.
/// Only DTMF events (0-15) are tracked; other events are ignored.
///
/// One packet can complete two digits (a new event whose only surviving packet is an end,
/// while the previous one never ended); the second is queued and returned by the next call
/// to [`on_packet`](Self::on_packet) or [`flush`](Self::flush).
#[derive(Debug)]
pub struct DigitTracker {
    clock_rate: u32,
    /// RTP timestamp of the most recent event seen (ended or not).
    last_ts: Option<u32>,
    /// The event with `last_ts`, while it has not ended.
    active: Option<ActiveEvent>,
    /// Completed digits not yet returned (at most two in practice).
    ready: std::collections::VecDeque<Digit>,
}

impl DigitTracker {
    /// A tracker for a stream whose telephone-event clock runs at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            last_ts: None,
            active: None,
            ready: std::collections::VecDeque::new(),
        }
    }

    /// Feeds one packet (its RTP timestamp and parsed payload); returns a digit when one
    /// completes.
    pub fn on_packet(&mut self, rtp_timestamp: u32, ev: &TelephoneEvent) -> Option<Digit> {
        if let Some(digit) = digit_char(ev.event) {
            self.track(rtp_timestamp, digit, ev);
        }
        self.ready.pop_front()
    }

    fn track(&mut self, ts: u32, digit: char, ev: &TelephoneEvent) {
        match self.last_ts {
            Some(last) if ts == last => {
                // Same event. Once it has been reported (active is None), the remaining
                // redundant end packets fall through here and are ignored.
                if let Some(active) = self.active.as_mut() {
                    // max: a reordered earlier packet carries a smaller cumulative duration.
                    active.duration = active.duration.max(ev.duration);
                    if ev.end {
                        let done = *active;
                        self.active = None;
                        self.push(done);
                    }
                }
            }
            // Serial-number comparison (timestamps wrap): an older event's late packet.
            Some(last) if (ts.wrapping_sub(last) as i32) < 0 => {}
            _ => {
                if let Some(prev) = self.active.take() {
                    self.push(prev);
                }
                self.last_ts = Some(ts);
                let active = ActiveEvent {
                    digit,
                    duration: ev.duration,
                };
                if ev.end {
                    self.push(active);
                } else {
                    self.active = Some(active);
                }
            }
        }
    }

    fn push(&mut self, ev: ActiveEvent) {
        self.ready.push_back(Digit {
            digit: ev.digit,
            duration: ev.duration,
            clock_rate: self.clock_rate,
        });
    }

    /// At hangup (or after a long silence): returns a queued digit or the unfinished one.
    /// Call until it returns `None` to drain everything.
    pub fn flush(&mut self) -> Option<Digit> {
        if let Some(active) = self.active.take() {
            self.push(active);
        }
        self.ready.pop_front()
    }
}

/// Where a [`DigitSender`] is in its burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendPhase {
    /// Sending growing durations; the value is the duration of the last packet sent.
    Tone(u16),
    /// Sending end packets; the value is how many have been sent.
    End(u8),
}

/// How many times the final (end) packet is sent, as RFC 4733 section 2.5.1.4 recommends.
const END_REPEATS: u8 = 3;

/// Generates the RFC 4733 packets of one digit.
///
/// Yields `(payload, marker)`: durations `packet_duration`, `2 * packet_duration`, ... up to
/// `duration` (the last clamped to it), then three end packets carrying `duration`. The
/// marker is set on the first packet only. All packets share one RTP timestamp (the
/// caller's), and the caller paces them one `packet_duration` apart.
#[derive(Debug, Clone)]
pub struct DigitSender {
    event: u8,
    duration: u16,
    packet_duration: u16,
    volume: u8,
    phase: SendPhase,
    first: bool,
}

impl DigitSender {
    /// A burst for `event` lasting `duration` clock units, one packet per
    /// `packet_duration` units, at `volume` -dBm0 (masked to 0..=63). A zero
    /// `packet_duration` sends the whole duration in one packet rather than looping.
    pub fn new(event: u8, duration: u16, packet_duration: u16, volume: u8) -> Self {
        Self {
            event,
            duration,
            packet_duration,
            volume: volume & 0x3F,
            // A zero-length digit goes straight to its end packets.
            phase: if duration == 0 {
                SendPhase::End(0)
            } else {
                SendPhase::Tone(0)
            },
            first: true,
        }
    }

    fn packet(&mut self, end: bool, duration: u16) -> (TelephoneEvent, bool) {
        let marker = std::mem::replace(&mut self.first, false);
        let ev = TelephoneEvent {
            event: self.event,
            end,
            volume: self.volume,
            duration,
        };
        (ev, marker)
    }
}

impl Iterator for DigitSender {
    type Item = (TelephoneEvent, bool);

    fn next(&mut self) -> Option<Self::Item> {
        match self.phase {
            SendPhase::Tone(sent) => {
                let next = if self.packet_duration == 0 {
                    self.duration
                } else {
                    sent.saturating_add(self.packet_duration).min(self.duration)
                };
                self.phase = if next >= self.duration {
                    SendPhase::End(0)
                } else {
                    SendPhase::Tone(next)
                };
                Some(self.packet(false, next))
            }
            SendPhase::End(n) if n < END_REPEATS => {
                self.phase = SendPhase::End(n + 1);
                Some(self.packet(true, self.duration))
            }
            SendPhase::End(_) => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event,
            end,
            volume: 10,
            duration,
        }
    }

    #[test]
    fn parse_and_to_bytes_round_trip() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 63,
            duration: 0x1234,
        };
        let b = e.to_bytes();
        assert_eq!(b, [11, 0xBF, 0x12, 0x34]);
        assert_eq!(TelephoneEvent::parse(&b).unwrap(), e);

        // R bit ignored, trailing bytes ignored.
        let p = TelephoneEvent::parse(&[5, 0x4A, 0x00, 0xA0, 0xFF]).unwrap();
        assert_eq!(p, ev(5, false, 160));
    }

    #[test]
    fn short_payload_is_malformed() {
        for len in 0..4 {
            let err = TelephoneEvent::parse(&[0u8; 3][..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Malformed {
                        what: "telephone-event",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn digit_names() {
        let all = "0123456789*#ABCD";
        for (i, c) in all.chars().enumerate() {
            assert_eq!(digit_char(i as u8), Some(c));
            assert_eq!(event_for_char(c), Some(i as u8));
        }
        assert_eq!(event_for_char('b'), Some(13));
        assert_eq!(digit_char(16), None);
        assert_eq!(event_for_char('E'), None);
    }

    #[test]
    fn rescale_between_8k_and_48k() {
        assert_eq!(rescale(4800, 48_000, 8_000), 800);
        assert_eq!(rescale(800, 8_000, 48_000), 4800);
        assert_eq!(rescale(7, 48_000, 8_000), 1); // 1.1666 rounds to 1
        assert_eq!(rescale(9, 48_000, 8_000), 2); // 1.5 rounds up
        assert_eq!(rescale(u32::MAX, 8_000, 48_000), u32::MAX);
        assert_eq!(rescale(5, 0, 8_000), 5);
        assert_eq!(rescale_duration(4800, 48_000, 8_000), 800);
        assert_eq!(rescale_duration(800, 8_000, 48_000), 4800);
        assert_eq!(rescale_duration(20_000, 8_000, 48_000), u16::MAX);
        assert_eq!(rescale_duration(10_922, 8_000, 48_000), 65_532);
    }

    #[test]
    fn digit_duration_ms() {
        let d = Digit {
            digit: '5',
            duration: 800,
            clock_rate: 8000,
        };
        assert_eq!(d.duration_ms(), 100);
        let d = Digit {
            digit: '5',
            duration: 4800,
            clock_rate: 48_000,
        };
        assert_eq!(d.duration_ms(), 100);
    }

    #[test]
    fn tracker_reports_once_despite_redundant_ends() {
        let mut t = DigitTracker::new(8000);
        let ts = 1000;
        assert_eq!(t.on_packet(ts, &ev(1, false, 160)), None);
        assert_eq!(t.on_packet(ts, &ev(1, false, 320)), None);
        assert_eq!(t.on_packet(ts, &ev(1, false, 480)), None);
        let d = t.on_packet(ts, &ev(1, true, 800)).unwrap();
        assert_eq!(
            d,
            Digit {
                digit: '1',
                duration: 800,
                clock_rate: 8000
            }
        );
        assert_eq!(t.on_packet(ts, &ev(1, true, 800)), None);
        assert_eq!(t.on_packet(ts, &ev(1, true, 800)), None);
        // A late, reordered packet of the same event does not resurrect it.
        assert_eq!(t.on_packet(ts, &ev(1, false, 640)), None);
        // The next key press with a new timestamp.
        assert_eq!(t.on_packet(ts + 2000, &ev(11, false, 160)), None);
        // A straggler from the first event (older timestamp) is ignored.
        assert_eq!(t.on_packet(ts, &ev(1, true, 800)), None);
        let d = t.on_packet(ts + 2000, &ev(11, true, 480)).unwrap();
        assert_eq!(d.digit, '#');
        assert_eq!(t.flush(), None);
    }

    #[test]
    fn tracker_reports_unfinished_digit_when_next_starts() {
        let mut t = DigitTracker::new(8000);
        assert_eq!(t.on_packet(500, &ev(2, false, 160)), None);
        assert_eq!(t.on_packet(500, &ev(2, false, 320)), None);
        // All end packets of '2' were lost; '3' starts.
        let d = t.on_packet(2500, &ev(3, false, 160)).unwrap();
        assert_eq!((d.digit, d.duration), ('2', 320));
        let d = t.on_packet(2500, &ev(3, true, 640)).unwrap();
        assert_eq!((d.digit, d.duration), ('3', 640));
    }

    #[test]
    fn tracker_queues_second_digit_completed_by_one_packet() {
        let mut t = DigitTracker::new(8000);
        assert_eq!(t.on_packet(100, &ev(4, false, 160)), None);
        // Only the end of '5' survives: it completes both '4' (unfinished) and '5'.
        assert_eq!(t.on_packet(900, &ev(5, true, 480)).unwrap().digit, '4');
        assert_eq!(t.on_packet(900, &ev(5, true, 480)).unwrap().digit, '5');
        assert_eq!(t.on_packet(900, &ev(5, true, 480)), None);
    }

    #[test]
    fn tracker_flush_and_wrap() {
        let mut t = DigitTracker::new(48_000);
        assert_eq!(t.on_packet(u32::MAX - 10, &ev(9, false, 960)), None);
        // Timestamp wrapped: still a newer event.
        let d = t.on_packet(5, &ev(0, false, 960)).unwrap();
        assert_eq!(d.digit, '9');
        let d = t.flush().unwrap();
        assert_eq!(
            d,
            Digit {
                digit: '0',
                duration: 960,
                clock_rate: 48_000
            }
        );
        assert_eq!(t.flush(), None);
        // Non-DTMF events are ignored.
        assert_eq!(t.on_packet(9000, &ev(16, true, 160)), None);
        assert_eq!(t.flush(), None);
    }

    #[test]
    fn sender_100ms_at_8k_with_20ms_packets() {
        let pkts: Vec<_> = DigitSender::new(7, 800, 160, 10).collect();
        let got: Vec<(u16, bool, bool)> =
            pkts.iter().map(|(e, m)| (e.duration, e.end, *m)).collect();
        assert_eq!(
            got,
            vec![
                (160, false, true),
                (320, false, false),
                (480, false, false),
                (640, false, false),
                (800, false, false),
                (800, true, false),
                (800, true, false),
                (800, true, false),
            ]
        );
        assert!(pkts.iter().all(|(e, _)| e.event == 7 && e.volume == 10));
    }

    #[test]
    fn sender_clamps_last_tone_packet_and_handles_edges() {
        let d: Vec<_> = DigitSender::new(1, 500, 160, 70)
            .map(|(e, _)| (e.duration, e.end, e.volume))
            .collect();
        assert_eq!(
            d,
            vec![
                (160, false, 6),
                (320, false, 6),
                (480, false, 6),
                (500, false, 6),
                (500, true, 6),
                (500, true, 6),
                (500, true, 6),
            ]
        );
        // Zero duration: only end packets, first one marked.
        let z: Vec<_> = DigitSender::new(1, 0, 160, 10).collect();
        assert_eq!(z.len(), 3);
        assert!(z[0].1 && z[0].0.end);
        // Zero packet duration does not loop forever.
        assert_eq!(DigitSender::new(1, 800, 0, 10).count(), 4);
        // Near u16::MAX the running duration saturates instead of overflowing.
        assert_eq!(DigitSender::new(1, u16::MAX, 40_000, 10).count(), 5);
    }

    #[test]
    fn sender_output_is_tracked_as_one_digit() {
        let mut t = DigitTracker::new(8000);
        let digits: Vec<_> = DigitSender::new(10, 800, 160, 10)
            .filter_map(|(e, _)| t.on_packet(42, &e))
            .collect();
        assert_eq!(
            digits,
            vec![Digit {
                digit: '*',
                duration: 800,
                clock_rate: 8000
            }]
        );
    }
}
