//! The small part of SDP offer/answer that signaling itself must get right: the media
//! direction of a hold or resume (RFC 3264 §6.1, §8.4). Codec negotiation and addresses
//! belong to the media engine, which hands signaling complete SDP bodies.

/// A media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer must carry for an offer with this one: a `sendonly` hold
    /// is answered `recvonly` (never `sendrecv`), `inactive` with `inactive`.
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether the far end put us on hold with this offer.
    pub fn is_hold(self) -> bool {
        matches!(self, Direction::SendOnly | Direction::Inactive)
    }
}

/// The direction of the first audio stream of `sdp` (session-level attribute as fallback,
/// `sendrecv` by default; a `c=` of 0.0.0.0 is the RFC 2543 way of saying hold).
pub fn direction(sdp: &str) -> Direction {
    let mut session = None;
    let mut media = None;
    let mut in_audio = false;
    let mut seen_media = false;
    let mut zero_conn = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if seen_media && in_audio {
                break;
            }
            seen_media = true;
            in_audio = m.starts_with("audio");
            continue;
        }
        if line == "c=IN IP4 0.0.0.0" && (in_audio || !seen_media) {
            zero_conn = true;
        }
        let d = match line {
            "a=sendrecv" => Direction::SendRecv,
            "a=sendonly" => Direction::SendOnly,
            "a=recvonly" => Direction::RecvOnly,
            "a=inactive" => Direction::Inactive,
            _ => continue,
        };
        if !seen_media {
            session = Some(d);
        } else if in_audio {
            media = Some(d);
        }
    }
    match media.or(session) {
        Some(d) => d,
        None if zero_conn => Direction::SendOnly,
        None => Direction::SendRecv,
    }
}

/// `sdp` with every direction attribute replaced by `dir` (added to each media section
/// without one), and `o=` version incremented so the peer sees a new description.
pub fn with_direction(sdp: &str, dir: Direction, bump_version: bool) -> String {
    let mut out = String::with_capacity(sdp.len() + 16);
    let mut pending = false;
    let flush = |out: &mut String, pending: &mut bool| {
        if *pending {
            out.push_str("a=");
            out.push_str(dir.as_str());
            out.push_str("\r\n");
            *pending = false;
        }
    };
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            flush(&mut out, &mut pending);
            pending = true;
        }
        if matches!(
            line,
            "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
        ) {
            if pending {
                flush(&mut out, &mut pending);
            }
            continue;
        }
        if bump_version && line.starts_with("o=") {
            out.push_str(&bump_origin(line));
            out.push_str("\r\n");
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    flush(&mut out, &mut pending);
    out
}

fn bump_origin(line: &str) -> String {
    let mut parts: Vec<String> = line.split(' ').map(str::to_string).collect();
    if let Some(v) = parts.get_mut(2) {
        if let Ok(n) = v.parse::<u64>() {
            *v = (n + 1).to_string();
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n";

    #[test]
    fn hold_answers() {
        assert_eq!(direction(OFFER), Direction::SendOnly);
        assert_eq!(direction(OFFER).answer(), Direction::RecvOnly);
        assert_eq!(Direction::Inactive.answer(), Direction::Inactive);
        assert_eq!(
            direction("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 1 RTP/AVP 0\r\n"),
            Direction::SendOnly
        );
        assert_eq!(
            direction("v=0\r\nm=audio 1 RTP/AVP 0\r\n"),
            Direction::SendRecv
        );
        assert_eq!(
            direction("v=0\r\na=inactive\r\nm=audio 1 RTP/AVP 0\r\n"),
            Direction::Inactive
        );
    }

    #[test]
    fn rewrite_direction_and_version() {
        let a = with_direction(OFFER, Direction::RecvOnly, true);
        assert!(a.contains("a=recvonly\r\n"), "{a}");
        assert!(!a.contains("a=sendonly"), "{a}");
        assert!(a.contains("o=- 1 2 IN IP4"), "{a}");
        let b = with_direction(
            "v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
            Direction::SendRecv,
            false,
        );
        assert!(b.ends_with("a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"), "{b}");
    }
}
