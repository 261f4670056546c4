//! ITU-T G.711 companding: µ-law (PCMU, payload type 0) and A-law (PCMA, payload type 8).
//!
//! SIP peers almost always speak G.711 while browsers speak Opus, so every transcoded call
//! runs each 20 ms frame through these functions. The arithmetic follows the classic
//! public-domain reference code (Sun Microsystems `g711.c` / CCITT): µ-law adds a bias of
//! 0x84, clips magnitudes at 32635 and transmits inverted bits; A-law works on the 13-bit
//! magnitude and transmits with even bits inverted (xor 0x55). Decoding is a lookup in a
//! 256-entry table built at compile time, because decode is the hot path on every received
//! packet and a table removes all branches.

/// Bias added to the µ-law magnitude so that the segment boundaries fall on powers of two.
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law can represent once the bias is added without overflowing 15 bits.
const ULAW_CLIP: i32 = 32635;

/// µ-law byte to linear sample, the reference decoder (used to build the table).
const fn ulaw_decode_slow(b: u8) -> i16 {
    // The wire format carries inverted bits so that silence is not a run of zero bytes.
    let u = !b;
    let exponent = ((u >> 4) & 0x07) as i32;
    let mantissa = (u & 0x0F) as i32;
    // Reconstruct at the middle of the quantisation step: ((m << 3) + bias) << e, minus bias.
    let t = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if u & 0x80 != 0 {
        -t as i16
    } else {
        t as i16
    }
}

/// A-law byte to linear sample, the reference decoder (used to build the table).
const fn alaw_decode_slow(b: u8) -> i16 {
    // Even bits are inverted on the wire (same reason as µ-law: avoid long zero runs).
    let a = b ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    // In A-law a set sign bit means a positive sample.
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

/// Builds a 256-entry decode table from a reference decoder at compile time.
const fn build_table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if alaw {
            alaw_decode_slow(i as u8)
        } else {
            ulaw_decode_slow(i as u8)
        };
        i += 1;
    }
    table
}

/// µ-law decode table, indexed by the wire byte.
static ULAW_TABLE: [i16; 256] = build_table(false);
/// A-law decode table, indexed by the wire byte.
static ALAW_TABLE: [i16; 256] = build_table(true);

/// Encodes one 16-bit linear sample as a µ-law byte.
pub fn ulaw_encode(s: i16) -> u8 {
    let s = i32::from(s);
    let sign: u8 = if s < 0 { 0x80 } else { 0 };
    // i32 arithmetic so that -32768 has a magnitude.
    let magnitude = s.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // Segment = position of the highest set bit above bit 7 (the reference's exp_lut).
    // magnitude <= 32767, so (magnitude >> 7) fits in a u8.
    let top = ((magnitude >> 7) & 0xFF) as u8;
    let exponent: u8 = if top == 0 {
        0
    } else {
        7 - top.leading_zeros() as u8
    };
    let mantissa = ((magnitude >> (exponent + 3)) & 0x0F) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// Decodes one µ-law byte to a 16-bit linear sample.
#[inline]
pub fn ulaw_decode(b: u8) -> i16 {
    ULAW_TABLE[usize::from(b)]
}

/// Encodes one 16-bit linear sample as an A-law byte.
pub fn alaw_encode(s: i16) -> u8 {
    // A-law works on 13 bits; the arithmetic shift floors negative values like the reference.
    let mut pcm = i32::from(s) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5 // sign bit set (positive) and the even-bit inversion
    } else {
        pcm = -pcm - 1; // ones' complement magnitude, as in the reference
        0x55
    };
    // Segment ends of the 13-bit magnitude: 0x1F, 0x3F, 0x7F, ..., 0xFFF.
    let mut seg: u8 = 0;
    while seg < 8 && pcm >= (0x20 << seg) {
        seg += 1;
    }
    if seg >= 8 {
        // Cannot happen for 16-bit input (max magnitude 4095), kept for parity with the reference.
        return 0x7F ^ mask;
    }
    let quant = if seg < 2 {
        (pcm >> 1) & 0x0F
    } else {
        (pcm >> seg) & 0x0F
    } as u8;
    ((seg << 4) | quant) ^ mask
}

/// Decodes one A-law byte to a 16-bit linear sample.
#[inline]
pub fn alaw_decode(b: u8) -> i16 {
    ALAW_TABLE[usize::from(b)]
}

/// Which G.711 companding law a stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// µ-law (PCMU), North America and Japan.
    Ulaw,
    /// A-law (PCMA), the rest of the world.
    Alaw,
}

impl Law {
    /// Encodes `pcm` and appends the bytes to `out` (appending lets callers reuse a buffer
    /// that already holds an RTP header).
    pub fn encode(self, pcm: &[i16], out: &mut Vec<u8>) {
        out.reserve(pcm.len());
        match self {
            Law::Ulaw => out.extend(pcm.iter().map(|&s| ulaw_encode(s))),
            Law::Alaw => out.extend(pcm.iter().map(|&s| alaw_encode(s))),
        }
    }

    /// Decodes `bytes` and appends the samples to `out`.
    pub fn decode(self, bytes: &[u8], out: &mut Vec<i16>) {
        let table = match self {
            Law::Ulaw => &ULAW_TABLE,
            Law::Alaw => &ALAW_TABLE,
        };
        out.reserve(bytes.len());
        out.extend(bytes.iter().map(|&b| table[usize::from(b)]));
    }

    /// The byte that encodes digital silence (used to fill gaps and comfort frames).
    pub fn silence(self) -> u8 {
        match self {
            Law::Ulaw => 0xFF,
            Law::Alaw => 0xD5,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_vectors() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_decode(0xCE), 988);
        assert_eq!(ulaw_encode(-1000), 0x4E);
    }

    #[test]
    fn alaw_known_vectors() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_decode(0xFA), 1008);
    }

    #[test]
    fn tables_match_reference_decoders() {
        for b in 0..=255u8 {
            assert_eq!(ulaw_decode(b), ulaw_decode_slow(b));
            assert_eq!(alaw_decode(b), alaw_decode_slow(b));
        }
    }

    #[test]
    fn every_byte_round_trips() {
        // Decoding then re-encoding a code word gives back the same code word, except the
        // redundant µ-law negative zero (0x7F decodes to 0, which encodes as 0xFF).
        for b in 0..=255u8 {
            let u = ulaw_encode(ulaw_decode(b));
            if b == 0x7F {
                assert_eq!(u, 0xFF);
            } else {
                assert_eq!(u, b, "µ-law {b:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(b)), b, "A-law {b:#04x}");
        }
    }

    #[test]
    fn ulaw_round_trip_error_is_within_half_a_step() {
        // A µ-law step in segment e is 2^(e+3) and the segment starts at 2^(e+7) - bias, so
        // the reconstruction error is at most (|x| + bias) / 32.
        for x in i16::MIN..=i16::MAX {
            let y = ulaw_decode(ulaw_encode(x));
            let err = (i32::from(x) - i32::from(y)).abs();
            assert!(
                err * 32 <= i32::from(x).abs() + ULAW_BIAS,
                "x={x} y={y} err={err}"
            );
        }
    }

    #[test]
    fn alaw_round_trip_error_is_within_half_a_step() {
        // Segment 0 has a fixed step of 16; above that a step is |x|/16 at most, plus one for
        // the ones' complement of negative inputs.
        for x in i16::MIN..=i16::MAX {
            let y = alaw_decode(alaw_encode(x));
            let err = (i32::from(x) - i32::from(y)).abs();
            let bound = 8.max(i32::from(x).abs() / 32) + 1;
            assert!(err <= bound, "x={x} y={y} err={err} bound={bound}");
        }
    }

    #[test]
    fn companding_is_monotonic() {
        let mut prev_u = i16::MIN;
        let mut prev_a = i16::MIN;
        for x in i16::MIN..=i16::MAX {
            let u = ulaw_decode(ulaw_encode(x));
            let a = alaw_decode(alaw_encode(x));
            assert!(u >= prev_u, "µ-law not monotonic at {x}");
            assert!(a >= prev_a, "A-law not monotonic at {x}");
            prev_u = u;
            prev_a = a;
        }
    }

    #[test]
    fn law_encode_decode_append() {
        let pcm = [0i16, 100, -100, 20000, -20000];
        for law in [Law::Ulaw, Law::Alaw] {
            let mut bytes = vec![0xAB];
            law.encode(&pcm, &mut bytes);
            assert_eq!(bytes.len(), 1 + pcm.len());
            assert_eq!(bytes[0], 0xAB);
            assert_eq!(bytes[1], law.silence());
            let mut out = vec![7i16];
            law.decode(&bytes[1..], &mut out);
            assert_eq!(out.len(), 1 + pcm.len());
            assert_eq!(out[0], 7);
            for (x, y) in pcm.iter().zip(&out[1..]) {
                assert!(
                    (i32::from(*x) - i32::from(*y)).abs() <= 1024,
                    "{law:?} {x} {y}"
                );
            }
        }
        assert_eq!(Law::Ulaw.silence(), 0xFF);
        assert_eq!(Law::Alaw.silence(), 0xD5);
    }
}
