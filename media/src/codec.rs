//! Audio codecs of a leg and the encoders/decoders behind them.
//!
//! Everything between the legs is 16-bit mono PCM at 8 kHz, 20 ms (160 samples) per frame:
//! the narrowband the PSTN carries anyway. libopus encodes from and decodes to 8 kHz
//! directly (no resampler), while the Opus RTP clock stays 48 kHz (+960 per frame).

use crate::g711::Law;
use crate::{Error, Result};

/// The Opus encoder's complexity (0–10). See [`Encoder::new`].
pub const OPUS_COMPLEXITY: i32 = 1;

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;

/// The audio payloads the engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// G.711 µ-law, 8 kHz (static payload type 0).
    Pcmu,
    /// G.711 A-law, 8 kHz (static payload type 8).
    Pcma,
    /// Opus, 48 kHz RTP clock.
    Opus,
}

impl Codec {
    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// RTP timestamp units per 20 ms frame.
    pub fn frame_units(self) -> u32 {
        self.clock_rate() / 50
    }

    /// The SDP encoding name (`a=rtpmap:<pt> <name>/<rate>[/<channels>]`).
    pub fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::Opus => "opus/48000/2",
        }
    }

    /// The payload type we offer (static for G.711, 111 like browsers for Opus).
    pub fn default_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => 111,
        }
    }

    /// Parses an SDP encoding name and clock rate (`PCMU`, `8000`), case-insensitively.
    pub fn from_rtpmap(name: &str, rate: u32) -> Option<Self> {
        match (name.to_ascii_lowercase().as_str(), rate) {
            ("pcmu", 8000) => Some(Codec::Pcmu),
            ("pcma", 8000) => Some(Codec::Pcma),
            ("opus", 48000) => Some(Codec::Opus),
            _ => None,
        }
    }

    /// The codec a static payload type means without an rtpmap (RFC 3551).
    pub fn from_static_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The E-model impairment class of this codec.
    pub fn impairment(self) -> crate::quality::CodecImpairment {
        match self {
            Codec::Pcmu | Codec::Pcma => crate::quality::CodecImpairment::G711,
            Codec::Opus => crate::quality::CodecImpairment::Opus,
        }
    }

    /// The G.711 law of this codec, if it is G.711.
    pub(crate) fn law(self) -> Option<Law> {
        match self {
            Codec::Pcmu => Some(Law::Ulaw),
            Codec::Pcma => Some(Law::Alaw),
            Codec::Opus => None,
        }
    }
}

/// Turns one leg's payloads into 8 kHz PCM frames.
#[derive(Debug)]
pub enum Decoder {
    /// µ-law or A-law: a table lookup per byte.
    G711(Law),
    /// libopus at 8 kHz, with concealment and in-band FEC.
    Opus(Box<opus::Decoder>),
}

impl Decoder {
    /// A decoder for `codec`.
    pub fn new(codec: Codec) -> Result<Self> {
        match codec.law() {
            Some(law) => Ok(Decoder::G711(law)),
            None => opus::Decoder::new(8000, opus::Channels::Mono)
                .map(|d| Decoder::Opus(Box::new(d)))
                .map_err(|e| Error::Codec(format!("opus decoder: {e}"))),
        }
    }

    /// Decodes one payload, appending its samples to `out`.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<()> {
        match self {
            Decoder::G711(law) => {
                law.decode(payload, out);
                Ok(())
            }
            // 120 ms is the longest Opus packet: 960 samples at 8 kHz.
            Decoder::Opus(dec) => opus_decode(dec, payload, false, 960, out),
        }
    }

    /// Fills one lost 20 ms frame: packet-loss concealment, or, when the packet after the
    /// gap is at hand, Opus in-band FEC from it (`next`).
    pub fn conceal(&mut self, next: Option<&[u8]>, out: &mut Vec<i16>) -> Result<()> {
        match self {
            // G.711 has no PLC of its own: repeat nothing, play silence (the listener hears
            // a 20 ms gap, which is what a phone would do without G.711 Appendix I).
            Decoder::G711(_) => {
                out.extend(std::iter::repeat_n(0, FRAME_SAMPLES));
                Ok(())
            }
            // libopus conceals (or rebuilds from FEC) exactly as many samples as it is
            // given room for: one 20 ms frame.
            Decoder::Opus(dec) => match next {
                Some(next) => opus_decode(dec, next, true, FRAME_SAMPLES, out),
                None => opus_decode(dec, &[], false, FRAME_SAMPLES, out),
            },
        }
    }
}

fn opus_decode(
    dec: &mut opus::Decoder,
    payload: &[u8],
    fec: bool,
    room: usize,
    out: &mut Vec<i16>,
) -> Result<()> {
    let start = out.len();
    out.resize(start + room, 0);
    match dec.decode(payload, &mut out[start..], fec) {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(Error::Codec(format!("opus decode: {e}")))
        }
    }
}

/// libopus as the bridge encodes: from 8 kHz mono, VoIP mode, narrowband, 20 kbit/s,
/// in-band FEC with a 5 % loss estimate, at `complexity` (the bridge uses
/// [`OPUS_COMPLEXITY`]; benches compare others).
pub fn opus_encoder(complexity: i32) -> Result<opus::Encoder> {
    let err = |e: opus::Error| Error::Codec(format!("opus encoder: {e}"));
    let mut enc =
        opus::Encoder::new(8000, opus::Channels::Mono, opus::Application::Voip).map_err(err)?;
    // INTEROP.md: VoIP, narrowband, 16–24 kbit/s, FEC on with a loss estimate.
    enc.set_bitrate(opus::Bitrate::Bits(20_000)).map_err(err)?;
    enc.set_inband_fec(true).map_err(err)?;
    enc.set_packet_loss_perc(5).map_err(err)?;
    enc.set_max_bandwidth(opus::Bandwidth::Narrowband)
        .map_err(err)?;
    // libopus defaults to complexity 9, which spends 146 µs per 20 ms frame here
    // (benches/README.md) for a narrowband voice that is headed for G.711 anyway; at 1,
    // SILK's narrowband encoder costs a fifth of that.
    enc.set_complexity(complexity).map_err(err)?;
    Ok(enc)
}

/// Turns 8 kHz PCM frames into one leg's payloads.
#[derive(Debug)]
pub enum Encoder {
    /// µ-law or A-law.
    G711(Law),
    /// libopus from 8 kHz input: VoIP mode, narrowband, in-band FEC.
    Opus(Box<opus::Encoder>),
}

impl Encoder {
    /// An encoder for `codec`.
    pub fn new(codec: Codec) -> Result<Self> {
        match codec.law() {
            Some(law) => Ok(Encoder::G711(law)),
            None => Ok(Encoder::Opus(Box::new(opus_encoder(OPUS_COMPLEXITY)?))),
        }
    }

    /// Encodes one 20 ms frame, replacing the contents of `out`.
    pub fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        match self {
            Encoder::G711(law) => {
                law.encode(pcm, out);
                Ok(())
            }
            Encoder::Opus(enc) => {
                out.resize(400, 0);
                let n = enc
                    .encode(pcm, out)
                    .map_err(|e| Error::Codec(format!("opus encode: {e}")))?;
                out.truncate(n);
                Ok(())
            }
        }
    }
}
