//! SDP for the RTP leg: the offer or answer we write, and the audio description we read
//! from a SIP peer's SDP.
//!
//! Only the first audio `m=` line matters to a gateway leg. The reader is deliberately
//! lenient about everything else (ordering, unknown lines, `\n` line ends), because real
//! carriers and desk phones send SDP that strict parsers refuse; what it does read is
//! checked and turned into typed values once.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::codec::Codec;
use crate::srtp::SdesCrypto;
use crate::{Error, Result};

/// Which way media flows, from the point of view of the SDP's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways.
    #[default]
    SendRecv,
    /// The author only sends (it holds the other side).
    SendOnly,
    /// The author only receives.
    RecvOnly,
    /// Nothing flows (hold).
    Inactive,
}

impl Direction {
    fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer gives to an offer with this one.
    pub fn reversed(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether the author of the SDP sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// One payload type of an audio `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The RTP payload type.
    pub pt: u8,
    /// The encoding name from `a=rtpmap` (or the static one), e.g. `PCMU`.
    pub name: String,
    /// The clock rate.
    pub rate: u32,
}

/// What a SIP peer's SDP says about its audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAudio {
    /// Where to send RTP (`c=` and the `m=` port). Port 0 means the stream is refused.
    pub ip: IpAddr,
    /// The RTP port.
    pub port: u16,
    /// The RTCP port (`a=rtcp`, else RTP + 1).
    pub rtcp_port: u16,
    /// The transport protocol (`RTP/AVP`, `RTP/SAVP`, ...).
    pub proto: String,
    /// Payload types in the peer's order of preference.
    pub payloads: Vec<Payload>,
    /// `a=crypto` lines (SDES-SRTP), in order.
    pub crypto: Vec<SdesCrypto>,
    /// The peer's direction.
    pub direction: Direction,
    /// `a=ptime`, if given.
    pub ptime: Option<u32>,
}

impl RemoteAudio {
    /// Reads the first audio stream of `sdp`.
    pub fn parse(sdp: &str) -> Result<Self> {
        let bad = |reason: String| Error::malformed("SDP", reason);
        let mut session_ip: Option<IpAddr> = None;
        let mut session_dir = Direction::SendRecv;
        let mut audio: Option<RemoteAudio> = None;
        let mut media_ip: Option<IpAddr> = None;
        let mut in_audio = false;
        let mut seen_audio = false;
        let mut rtpmaps: Vec<(u8, String, u32)> = Vec::new();
        let mut dir: Option<Direction> = None;
        for line in sdp.lines() {
            let line = line.trim_end_matches('\r');
            let Some((kind, value)) = line.split_once('=') else {
                continue;
            };
            match kind {
                "m" => {
                    if seen_audio {
                        // Only the first audio stream is ours; stop at the next m= line.
                        in_audio = false;
                        continue;
                    }
                    let mut parts = value.split_whitespace();
                    let media = parts.next().unwrap_or_default();
                    if media != "audio" {
                        in_audio = false;
                        continue;
                    }
                    let port = parts
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or_else(|| bad(format!("bad m= port in {line:?}")))?;
                    let proto = parts
                        .next()
                        .ok_or_else(|| bad(format!("no protocol in {line:?}")))?
                        .to_string();
                    let mut payloads = Vec::new();
                    for fmt in parts {
                        let pt = fmt
                            .parse::<u8>()
                            .ok()
                            .filter(|pt| *pt < 128)
                            .ok_or_else(|| bad(format!("bad payload type {fmt:?}")))?;
                        payloads.push(Payload {
                            pt,
                            name: String::new(),
                            rate: 0,
                        });
                    }
                    in_audio = true;
                    seen_audio = true;
                    audio = Some(RemoteAudio {
                        ip: IpAddr::from([0, 0, 0, 0]),
                        port,
                        rtcp_port: port.wrapping_add(1),
                        proto,
                        payloads,
                        crypto: Vec::new(),
                        direction: Direction::SendRecv,
                        ptime: None,
                    });
                }
                "c" => {
                    let addr = value
                        .split_whitespace()
                        .nth(2)
                        .and_then(|a| a.split('/').next())
                        .and_then(|a| a.parse::<IpAddr>().ok())
                        .ok_or_else(|| bad(format!("bad connection line {line:?}")))?;
                    if in_audio {
                        media_ip = Some(addr);
                    } else if !seen_audio {
                        session_ip = Some(addr);
                    }
                }
                "a" => {
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    let d = match name {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    if !in_audio {
                        if let Some(d) = d {
                            if !seen_audio {
                                session_dir = d;
                            }
                        }
                        continue;
                    }
                    let Some(a) = audio.as_mut() else { continue };
                    if let Some(d) = d {
                        dir = Some(d);
                        continue;
                    }
                    match name {
                        "rtpmap" => {
                            let mut it = arg.split_whitespace();
                            let pt = it.next().and_then(|p| p.parse::<u8>().ok());
                            let enc = it.next().unwrap_or_default();
                            let mut enc_parts = enc.split('/');
                            let ename = enc_parts.next().unwrap_or_default().to_string();
                            let rate = enc_parts.next().and_then(|r| r.parse::<u32>().ok());
                            match (pt, rate) {
                                (Some(pt), Some(rate)) => rtpmaps.push((pt, ename, rate)),
                                _ => return Err(bad(format!("bad rtpmap {line:?}"))),
                            }
                        }
                        "crypto" => a.crypto.push(SdesCrypto::parse(arg)?),
                        "rtcp" => {
                            if let Some(p) = arg
                                .split_whitespace()
                                .next()
                                .and_then(|p| p.parse::<u16>().ok())
                            {
                                a.rtcp_port = p;
                            }
                        }
                        "ptime" => a.ptime = arg.trim().parse().ok(),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let mut audio = audio.ok_or_else(|| bad("no audio stream (m=audio)".into()))?;
        audio.ip = media_ip
            .or(session_ip)
            .ok_or_else(|| bad("no connection address (c=)".into()))?;
        audio.direction = dir.unwrap_or(session_dir);
        for p in &mut audio.payloads {
            if let Some((_, name, rate)) = rtpmaps.iter().find(|(pt, _, _)| *pt == p.pt) {
                p.name = name.clone();
                p.rate = *rate;
            } else if let Some(c) = Codec::from_static_payload_type(p.pt) {
                let (name, rate) = c.rtpmap().split_once('/').unwrap_or(("", ""));
                p.name = name.to_string();
                p.rate = rate.parse().unwrap_or(8000);
            }
        }
        Ok(audio)
    }

    /// Whether the stream is SDES-SRTP (`RTP/SAVP`).
    pub fn is_secure(&self) -> bool {
        self.proto.eq_ignore_ascii_case("RTP/SAVP")
    }

    /// The payload type of telephone-event at `rate`, if offered.
    pub fn telephone_event(&self, rate: u32) -> Option<u8> {
        self.payloads
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case("telephone-event") && p.rate == rate)
            .map(|p| p.pt)
    }

    /// The peer's payload types we can speak, in the peer's order.
    pub fn codecs(&self) -> Vec<(Codec, u8)> {
        self.payloads
            .iter()
            .filter_map(|p| Codec::from_rtpmap(&p.name, p.rate).map(|c| (c, p.pt)))
            .collect()
    }
}

/// The audio description we write for an RTP leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAudio {
    /// The address peers send to (the public address when configured).
    pub ip: IpAddr,
    /// Our RTP port (RTCP on the next one).
    pub port: u16,
    /// Codecs and their payload types, in our order of preference.
    pub codecs: Vec<(Codec, u8)>,
    /// telephone-event/8000 payload type, when offered.
    pub dtmf_pt: Option<u8>,
    /// Our SDES key, when the stream is secure.
    pub crypto: Option<SdesCrypto>,
    /// Our direction.
    pub direction: Direction,
}

impl LocalAudio {
    /// Writes a complete SDP body (`o=` with `session_id` and `version`).
    pub fn to_sdp(&self, session_id: u64, version: u64) -> String {
        let family = if self.ip.is_ipv4() { "IP4" } else { "IP6" };
        let proto = if self.crypto.is_some() {
            "RTP/SAVP"
        } else {
            "RTP/AVP"
        };
        let mut s = String::with_capacity(400);
        // Infallible: writing to a String cannot fail.
        let _ = write!(
            s,
            "v=0\r\no=papercup {session_id} {version} IN {family} {ip}\r\ns=papercup\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} {proto}",
            ip = self.ip,
            port = self.port
        );
        for (_, pt) in &self.codecs {
            let _ = write!(s, " {pt}");
        }
        if let Some(pt) = self.dtmf_pt {
            let _ = write!(s, " {pt}");
        }
        s.push_str("\r\n");
        for (codec, pt) in &self.codecs {
            let _ = write!(s, "a=rtpmap:{pt} {}\r\n", codec.rtpmap());
            if *codec == Codec::Opus {
                let _ = write!(s, "a=fmtp:{pt} useinbandfec=1\r\n");
            }
        }
        if let Some(pt) = self.dtmf_pt {
            let _ = write!(
                s,
                "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n"
            );
        }
        if let Some(c) = &self.crypto {
            let _ = write!(s, "a=crypto:{}\r\n", c.to_attribute());
        }
        let _ = write!(
            s,
            "a=ptime:20\r\na=rtcp:{}\r\na={}\r\n",
            self.port.wrapping_add(1),
            self.direction.attr()
        );
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PHONE: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendonly\r\n\
m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

    #[test]
    fn reads_the_first_audio_stream() {
        let a = RemoteAudio::parse(PHONE).unwrap();
        assert_eq!(a.ip, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((a.port, a.rtcp_port), (4000, 4001));
        assert_eq!(a.codecs(), vec![(Codec::Pcma, 8), (Codec::Pcmu, 0)]);
        assert_eq!(a.telephone_event(8000), Some(101));
        assert_eq!(a.direction, Direction::SendOnly);
        assert_eq!(a.ptime, Some(20));
        assert!(!a.is_secure());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        assert!(RemoteAudio::parse("v=0\r\nc=IN IP4 1.2.3.4\r\n").is_err());
        assert!(RemoteAudio::parse("v=0\r\nm=audio 4000 RTP/AVP 0\r\n").is_err());
        assert!(RemoteAudio::parse("v=0\r\nc=IN IP4 nope\r\nm=audio 4000 RTP/AVP 0\r\n").is_err());
        assert!(RemoteAudio::parse("c=IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert!(RemoteAudio::parse("c=IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 300\r\n").is_err());
    }

    #[test]
    fn our_sdp_reads_back() {
        let local = LocalAudio {
            ip: "203.0.113.5".parse().unwrap(),
            port: 10000,
            codecs: vec![(Codec::Pcmu, 0), (Codec::Pcma, 8)],
            dtmf_pt: Some(101),
            crypto: Some(SdesCrypto::generate(1, crate::srtp::Suite::Aes128Sha1_80)),
            direction: Direction::SendRecv,
        };
        let back = RemoteAudio::parse(&local.to_sdp(7, 1)).unwrap();
        assert_eq!(back.port, 10000);
        assert_eq!(back.codecs(), local.codecs);
        assert_eq!(back.telephone_event(8000), Some(101));
        assert!(back.is_secure());
        assert_eq!(back.crypto, vec![local.crypto.clone().unwrap()]);
    }
}
