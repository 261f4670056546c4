//! Edge validation of every SIP message a transport receives, before any transaction
//! state exists for it.
//!
//! rsipstack's parser is lenient: it accepts many messages RFC 3261 calls malformed
//! (missing or repeated mandatory headers, a CSeq whose method is not the request's, a
//! Content-Length larger than the datagram, unbalanced quotes, …) and it rejects a few
//! valid ones (extension methods). [`check`] reads the raw bytes itself and decides, as
//! RFC 3261 and the torture tests of RFC 4475 ask:
//!
//! * a malformed **request** gets a stateless `400 Bad Request` built from the raw bytes
//!   (so it works when the crate parser failed): every Via copied in order, From, To (with
//!   a To tag added), Call-ID and CSeq copied, and a `Warning: 399 papercup "<reason>"`
//!   naming the exact problem. Other errors the edge can answer on its own: a SIP version
//!   other than 2.0 → `505`, an extension method → `501` with `Allow`, a Request-URI
//!   scheme other than sip/sips/tel → `416`, a `Require` option-tag other than `timer` →
//!   `420` with `Unsupported`. A request without any Via cannot be answered and is
//!   dropped; an ACK is never answered (RFC 3261 §17), so a bad one is dropped too.
//! * a malformed **response** is dropped, never answered; so is a response carrying more
//!   than one Via value, which a user agent must discard (RFC 3261 §8.1.3.3, RFC 4475
//!   §3.3.15 `bcast`).
//! * everything else is accepted; reactions that need application state (483, 415, 401,
//!   404, 405, …) are the application's.
//!
//! On a datagram transport (`reliable == false`) a body shorter than Content-Length is an
//! error while a longer one is truncated (RFC 3261 §18.3); on a stream the framing has
//! already been done by Content-Length.
//!
//! All functions here are pure: no I/O, no allocation proportional to anything but the
//! input, and no panics on any input.

use rsipstack::sip::SipMessage;

/// What the transport should do with a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeVerdict {
    /// Hand it to the SIP stack.
    Accept,
    /// Forget it silently.
    Drop {
        /// Why, for the log.
        reason: String,
    },
    /// Send `bytes` (a complete SIP response) back to the source and forget the message.
    Reply {
        /// The status code of the response in `bytes`.
        status: u16,
        /// Why, as also carried in the response's Warning header.
        reason: String,
        /// The response, ready for the wire.
        bytes: Vec<u8>,
    },
}

/// The methods listed in the `Allow` header of a `501 Not Implemented`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, UPDATE, INFO, PRACK";

/// Option-tags a `Require` header may name without drawing a `420 Bad Extension`.
pub const SUPPORTED_OPTION_TAGS: &[&str] = &["timer"];

/// Methods the SIP stack can parse and route to the application (case-sensitive, as SIP
/// methods are); any other method token draws a `501`.
const KNOWN_METHODS: &[&str] = &[
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// Request-URI schemes this element serves; any other draws a `416`.
const SUPPORTED_URI_SCHEMES: &[&str] = &["sip", "sips", "tel"];

/// The agent name in the Warning header of the responses built here.
const WARN_AGENT: &str = "papercup";

/// Decide what to do with one received message.
///
/// `raw` is the message as received (for a datagram, the whole datagram); `parsed` is
/// rsipstack's parse of the same bytes (its error as text); `reliable` is true for stream
/// transports (TCP, TLS, WebSocket), whose framing already applied Content-Length.
pub fn check(raw: &[u8], parsed: Result<&SipMessage, &str>, reliable: bool) -> EdgeVerdict {
    let scan = Scan::new(raw);
    if is_status_line(scan.start) {
        match check_response(&scan, parsed, reliable) {
            Ok(()) => EdgeVerdict::Accept,
            Err(reason) => EdgeVerdict::Drop { reason },
        }
    } else {
        check_request(&scan, parsed, reliable)
    }
}

// ---------------------------------------------------------------------------------------
// Scanning the raw message into a start line, unfolded header fields and a body.

/// The header fields the edge looks at (compact forms included); the rest is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    Contact,
    Expires,
    Date,
    Require,
    Other,
}

impl Kind {
    fn of(name: &[u8]) -> Kind {
        const NAMES: &[(&str, Kind)] = &[
            ("via", Kind::Via),
            ("v", Kind::Via),
            ("from", Kind::From),
            ("f", Kind::From),
            ("to", Kind::To),
            ("t", Kind::To),
            ("call-id", Kind::CallId),
            ("i", Kind::CallId),
            ("cseq", Kind::CSeq),
            ("max-forwards", Kind::MaxForwards),
            ("content-length", Kind::ContentLength),
            ("l", Kind::ContentLength),
            ("contact", Kind::Contact),
            ("m", Kind::Contact),
            ("expires", Kind::Expires),
            ("date", Kind::Date),
            ("require", Kind::Require),
        ];
        NAMES
            .iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map_or(Kind::Other, |(_, k)| *k)
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Via => "Via",
            Kind::From => "From",
            Kind::To => "To",
            Kind::CallId => "Call-ID",
            Kind::CSeq => "CSeq",
            Kind::MaxForwards => "Max-Forwards",
            Kind::ContentLength => "Content-Length",
            Kind::Contact => "Contact",
            Kind::Expires => "Expires",
            Kind::Date => "Date",
            Kind::Require => "Require",
            Kind::Other => "extension",
        }
    }
}

/// One header field, continuation lines unfolded into single spaces, value trimmed.
#[derive(Debug)]
struct Field {
    kind: Kind,
    value: Vec<u8>,
}

#[derive(Debug)]
struct Scan<'a> {
    /// The first line, without its line end.
    start: &'a [u8],
    fields: Vec<Field>,
    /// Everything after the empty line that ends the header section.
    body: &'a [u8],
    /// Whether that empty line was found at all.
    terminated: bool,
    /// The first structural problem of the header section (a line without a colon, …).
    problem: Option<String>,
}

impl<'a> Scan<'a> {
    fn new(raw: &'a [u8]) -> Scan<'a> {
        // CRLFs before the start line are ignored (RFC 3261 §7.5).
        let mut pos = raw
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(raw.len());
        let mut scan = Scan {
            start: &[],
            fields: Vec::new(),
            body: &[],
            terminated: false,
            problem: None,
        };
        let mut first = true;
        while pos < raw.len() {
            let rest = raw.get(pos..).unwrap_or_default();
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(n) => (rest.get(..n).unwrap_or_default(), pos.saturating_add(n + 1)),
                None => (rest, raw.len()),
            };
            pos = next;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if first {
                scan.start = line;
                first = false;
                continue;
            }
            if line.is_empty() {
                scan.terminated = true;
                scan.body = raw.get(pos..).unwrap_or_default();
                break;
            }
            scan.add_line(line);
        }
        scan
    }

    fn note(&mut self, problem: String) {
        if self.problem.is_none() {
            self.problem = Some(problem);
        }
    }

    fn add_line(&mut self, line: &[u8]) {
        if line.contains(&b'\r') {
            self.note("stray CR inside a header line".to_string());
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            // A continuation of the previous field (RFC 3261 §7.3.1).
            match self.fields.last_mut() {
                Some(field) => {
                    let more = trim(line);
                    if !more.is_empty() {
                        if !field.value.is_empty() {
                            field.value.push(b' ');
                        }
                        field.value.extend_from_slice(more);
                    }
                }
                None => self.note("the start line is followed by a folded line".to_string()),
            }
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            self.note(format!("header line without a colon: {}", show(line)));
            return;
        };
        let name = trim_end(line.get(..colon).unwrap_or_default());
        if name.is_empty() || !name.iter().all(|&b| is_token_char(b)) {
            self.note(format!("invalid header name {}", show(name)));
            return;
        }
        self.fields.push(Field {
            kind: Kind::of(name),
            value: trim(line.get(colon + 1..).unwrap_or_default()).to_vec(),
        });
    }

    fn all(&self, kind: Kind) -> impl Iterator<Item = &Field> + '_ {
        self.fields.iter().filter(move |f| f.kind == kind)
    }

    fn first(&self, kind: Kind) -> Option<&Field> {
        self.all(kind).next()
    }

    fn count(&self, kind: Kind) -> usize {
        self.all(kind).count()
    }
}

// ---------------------------------------------------------------------------------------
// Requests.

/// Why a request is refused, with the response to send.
#[derive(Debug)]
struct Problem {
    status: u16,
    reason: String,
    extra: Vec<(&'static str, String)>,
}

impl Problem {
    fn bad(reason: impl Into<String>) -> Problem {
        Problem {
            status: 400,
            reason: reason.into(),
            extra: Vec::new(),
        }
    }
}

fn check_request(
    scan: &Scan<'_>,
    parsed: Result<&SipMessage, &str>,
    reliable: bool,
) -> EdgeVerdict {
    let method = scan
        .start
        .split(|&b| b == b' ' || b == b'\t')
        .next()
        .unwrap_or_default();
    if method.is_empty() || !method.iter().all(|&b| is_token_char(b)) {
        // Not even a request line: answer only if the message names a transaction.
        let reason = if matches!(scan.start.first(), Some(b' ' | b'\t')) {
            "the start line begins with whitespace".to_string()
        } else {
            match parsed {
                Err(e) => format!("unparsable message: {}", show(e.as_bytes())),
                Ok(_) => format!("malformed start line {}", show(scan.start)),
            }
        };
        if scan.first(Kind::Via).is_none() || scan.first(Kind::CallId).is_none() {
            return EdgeVerdict::Drop { reason };
        }
        return reply(scan, Problem::bad(reason));
    }
    match validate_request(scan, method, parsed, reliable) {
        Ok(()) => EdgeVerdict::Accept,
        Err(problem) if method == b"ACK" => EdgeVerdict::Drop {
            reason: format!("{} (an ACK is never answered)", problem.reason),
        },
        Err(problem) if scan.first(Kind::Via).is_none() => EdgeVerdict::Drop {
            reason: format!("{} (no Via to answer to)", problem.reason),
        },
        Err(problem) => reply(scan, problem),
    }
}

fn validate_request(
    scan: &Scan<'_>,
    method: &[u8],
    parsed: Result<&SipMessage, &str>,
    reliable: bool,
) -> Result<(), Problem> {
    // The request line: exactly `Method SP Request-URI SP SIP-Version`.
    let (uri, version) = request_line(scan.start)?;
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Err(if is_version(version) {
            Problem {
                status: 505,
                reason: format!("SIP version {} is not supported", show(version)),
                extra: Vec::new(),
            }
        } else {
            Problem::bad(format!("malformed SIP-Version {}", show(version)))
        });
    }
    let scheme = request_uri(uri)?;

    // The header section.
    if let Some(problem) = &scan.problem {
        return Err(Problem::bad(problem.clone()));
    }
    if scan.count(Kind::Via) == 0 {
        return Err(Problem::bad("missing Via header"));
    }
    let missing: Vec<&str> = [Kind::To, Kind::From, Kind::CallId, Kind::CSeq]
        .into_iter()
        .filter(|&k| scan.count(k) == 0)
        .map(Kind::label)
        .collect();
    if !missing.is_empty() {
        return Err(Problem::bad(format!(
            "missing {} header{}",
            join_and(&missing),
            if missing.len() > 1 { "s" } else { "" }
        )));
    }
    let repeated: Vec<&str> = [
        Kind::CSeq,
        Kind::CallId,
        Kind::From,
        Kind::To,
        Kind::MaxForwards,
    ]
    .into_iter()
    .filter(|&k| scan.count(k) > 1)
    .map(Kind::label)
    .collect();
    if !repeated.is_empty() {
        return Err(Problem::bad(format!(
            "more than one {} header",
            join_and(&repeated)
        )));
    }

    let cseq = field_value(scan, Kind::CSeq);
    let (_, cseq_method) = parse_cseq(cseq).map_err(Problem::bad)?;
    if cseq_method != method {
        return Err(Problem::bad(format!(
            "CSeq method {} does not match request method {}",
            show(cseq_method),
            show(method)
        )));
    }
    if let Some(mf) = scan.first(Kind::MaxForwards) {
        check_max_forwards(&mf.value).map_err(Problem::bad)?;
    }
    check_call_id(field_value(scan, Kind::CallId)).map_err(Problem::bad)?;
    for via in scan.all(Kind::Via) {
        parse_via(&via.value).map_err(Problem::bad)?;
    }
    parse_single_addr(field_value(scan, Kind::From), "From").map_err(Problem::bad)?;
    let to = parse_single_addr(field_value(scan, Kind::To), "To").map_err(Problem::bad)?;
    if method == b"REGISTER" {
        let to_scheme = uri_scheme(to.uri).unwrap_or_default();
        if !(to_scheme.eq_ignore_ascii_case(b"sip") || to_scheme.eq_ignore_ascii_case(b"sips")) {
            return Err(Problem::bad(format!(
                "the To of a REGISTER must be a sip or sips address-of-record, not {}",
                show(to.uri)
            )));
        }
    }
    for contact in scan.all(Kind::Contact) {
        check_contact(&contact.value).map_err(Problem::bad)?;
    }
    for expires in scan.all(Kind::Expires) {
        check_delta_seconds(&expires.value, "Expires").map_err(Problem::bad)?;
    }
    for date in scan.all(Kind::Date) {
        check_date(&date.value).map_err(Problem::bad)?;
    }
    let unsupported = require_options(scan).map_err(Problem::bad)?;
    check_framing(scan, reliable).map_err(Problem::bad)?;

    // Well formed; now what this element can answer without application state.
    let method_text = core::str::from_utf8(method).unwrap_or_default();
    if !KNOWN_METHODS.contains(&method_text) {
        return Err(Problem {
            status: 501,
            reason: format!("method {} is not implemented", show(method)),
            extra: vec![("Allow", ALLOW.to_string())],
        });
    }
    if !SUPPORTED_URI_SCHEMES
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s.as_bytes()))
    {
        return Err(Problem {
            status: 416,
            reason: format!("Request-URI scheme {} is not supported", show(scheme)),
            extra: Vec::new(),
        });
    }
    // RFC 3261 §8.2.2.3; a CANCEL's Require is ignored, an ACK is never answered.
    if !unsupported.is_empty() && method != b"CANCEL" {
        let list = unsupported.join(", ");
        return Err(Problem {
            status: 420,
            reason: format!("unsupported option-tag(s) in Require: {list}"),
            extra: vec![("Unsupported", list)],
        });
    }
    if let Err(e) = parsed {
        return Err(Problem::bad(format!(
            "unparsable request: {}",
            show(e.as_bytes())
        )));
    }
    Ok(())
}

/// Splits the request line into Request-URI and SIP-Version, strictly.
fn request_line(line: &[u8]) -> Result<(&[u8], &[u8]), Problem> {
    if matches!(line.last(), Some(b' ' | b'\t')) {
        return Err(Problem::bad(
            "whitespace after the SIP-Version of the request line",
        ));
    }
    if line.contains(&b'\t') {
        return Err(Problem::bad("tab in the request line"));
    }
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Problem::bad(
            "more than one space between the elements of the request line",
        ));
    }
    match parts.as_slice() {
        [_, uri, version] => Ok((uri, version)),
        [_, _, _, ..] => Err(Problem::bad("the Request-URI contains whitespace")),
        _ => Err(Problem::bad(
            "the request line lacks its Request-URI or SIP-Version",
        )),
    }
}

/// Checks a Request-URI and returns its scheme.
fn request_uri(uri: &[u8]) -> Result<&[u8], Problem> {
    if uri.first() == Some(&b'<') {
        return Err(Problem::bad("the Request-URI must not be enclosed in <>"));
    }
    if let Some(&b) = uri
        .iter()
        .find(|&&b| !(0x21..=0x7e).contains(&b) || matches!(b, b'<' | b'>' | b'"'))
    {
        return Err(Problem::bad(format!(
            "the Request-URI contains the illegal character {}",
            show_byte(b)
        )));
    }
    let Some(scheme) = uri_scheme(uri) else {
        return Err(Problem::bad(format!(
            "the Request-URI {} has no scheme",
            show(uri)
        )));
    };
    if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
        let rest = uri.get(scheme.len() + 1..).unwrap_or_default();
        // userinfo cannot hold a literal '@'; host, parameters and headers cannot either.
        let host_part = match rest.iter().rposition(|&b| b == b'@') {
            Some(at) => rest.get(at + 1..).unwrap_or_default(),
            None => rest,
        };
        if host_part.is_empty() || matches!(host_part.first(), Some(b';' | b'?' | b':')) {
            return Err(Problem::bad(format!(
                "the Request-URI {} has no host",
                show(uri)
            )));
        }
        if host_part.contains(&b'?') {
            return Err(Problem::bad(
                "the Request-URI carries escaped headers (?...), which a Request-URI must not",
            ));
        }
    }
    Ok(scheme)
}

/// `SIP/` 1*DIGIT `.` 1*DIGIT.
fn is_version(v: &[u8]) -> bool {
    let Some((head, rest)) = v.split_at_checked(4) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(b"SIP/") {
        return false;
    }
    let mut it = rest.split(|&b| b == b'.');
    let (Some(major), Some(minor), None) = (it.next(), it.next(), it.next()) else {
        return false;
    };
    is_digits(major) && is_digits(minor)
}

/// The option-tags of the Require headers that this element does not support.
fn require_options(scan: &Scan<'_>) -> Result<Vec<String>, String> {
    let mut unsupported: Vec<String> = Vec::new();
    for field in scan.all(Kind::Require) {
        for tag in field.value.split(|&b| b == b',') {
            let tag = trim(tag);
            if tag.is_empty() {
                return Err("empty option-tag in Require".to_string());
            }
            if !tag.iter().all(|&b| is_token_char(b)) {
                return Err(format!("invalid option-tag {} in Require", show(tag)));
            }
            let supported = SUPPORTED_OPTION_TAGS
                .iter()
                .any(|s| tag.eq_ignore_ascii_case(s.as_bytes()));
            let text = String::from_utf8_lossy(tag).into_owned();
            if !supported && !unsupported.contains(&text) {
                unsupported.push(text);
            }
        }
    }
    Ok(unsupported)
}

/// Content-Length and the presence of the body it announces.
fn check_framing(scan: &Scan<'_>, reliable: bool) -> Result<(), String> {
    let lengths: Vec<&Field> = scan.all(Kind::ContentLength).collect();
    if lengths.len() > 1 {
        let values: Vec<String> = lengths.iter().map(|f| show(&f.value)).collect();
        return Err(format!(
            "{} Content-Length headers ({}): the body length is ambiguous",
            lengths.len(),
            values.join(", ")
        ));
    }
    if !scan.terminated {
        return Err(
            "the message ends without the empty line that closes its header section".to_string(),
        );
    }
    let Some(field) = lengths.first() else {
        // Optional on datagram transports (RFC 3261 §20.14): the body is the rest.
        return Ok(());
    };
    if !is_digits(&field.value) {
        return Err(format!(
            "Content-Length {} is not a non-negative integer",
            show(&field.value)
        ));
    }
    let Some(length) = parse_u64(&field.value) else {
        return Err(format!(
            "Content-Length {} is too large",
            show(&field.value)
        ));
    };
    let received = u64::try_from(scan.body.len()).unwrap_or(u64::MAX);
    if !reliable && length > received {
        return Err(format!(
            "Content-Length {length} exceeds the {received} body bytes received"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Responses: checked, never answered.

fn check_response(
    scan: &Scan<'_>,
    parsed: Result<&SipMessage, &str>,
    reliable: bool,
) -> Result<(), String> {
    let (version, rest) = split_once(scan.start, b' ').unwrap_or((scan.start, &[]));
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Err(format!("response version {} is not SIP/2.0", show(version)));
    }
    let code = split_once(rest, b' ').map_or(rest, |(code, _)| code);
    if code.len() != 3 || !is_digits(code) || !matches!(code.first(), Some(b'1'..=b'6')) {
        return Err(format!(
            "status code {} is not a three-digit code from 100 to 699",
            show(code)
        ));
    }
    if let Some(problem) = &scan.problem {
        return Err(problem.clone());
    }
    for kind in [Kind::To, Kind::From, Kind::CallId, Kind::CSeq] {
        match scan.count(kind) {
            0 => return Err(format!("response without a {} header", kind.label())),
            1 => {}
            n => return Err(format!("response with {n} {} headers", kind.label())),
        }
    }
    parse_cseq(field_value(scan, Kind::CSeq))?;
    check_call_id(field_value(scan, Kind::CallId))?;
    if scan.count(Kind::Via) == 0 {
        return Err("response without a Via header".to_string());
    }
    let mut vias = 0usize;
    for via in scan.all(Kind::Via) {
        vias = vias.saturating_add(parse_via(&via.value)?);
    }
    if vias != 1 {
        return Err(format!(
            "response with {vias} Via values: a user agent discards it (RFC 3261 §8.1.3.3)"
        ));
    }
    parse_single_addr(field_value(scan, Kind::From), "From")?;
    parse_single_addr(field_value(scan, Kind::To), "To")?;
    check_framing(scan, reliable)?;
    if let Err(e) = parsed {
        return Err(format!("unparsable response: {}", show(e.as_bytes())));
    }
    Ok(())
}

fn is_status_line(line: &[u8]) -> bool {
    line.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}

// ---------------------------------------------------------------------------------------
// Header grammars (RFC 3261 §25), on unfolded values.

fn field_value<'s>(scan: &'s Scan<'_>, kind: Kind) -> &'s [u8] {
    scan.first(kind).map_or(&[][..], |f| f.value.as_slice())
}

/// `CSeq: 1*DIGIT LWS Method`, the number below 2^31 (RFC 3261 §8.1.1.5).
fn parse_cseq(v: &[u8]) -> Result<(u32, &[u8]), String> {
    let mut c = Cur::new(v);
    c.skip_ws();
    let digits = c.take_while(|b| b.is_ascii_digit());
    if digits.is_empty() {
        return Err(format!("CSeq {} does not start with a number", show(v)));
    }
    if !c.skip_ws() {
        return Err(format!(
            "CSeq {} lacks whitespace and a method after its number",
            show(v)
        ));
    }
    let method = c.token();
    if method.is_empty() {
        return Err(format!("CSeq {} has no valid method", show(v)));
    }
    c.skip_ws();
    if !c.eof() {
        return Err(format!(
            "unexpected text after the CSeq method in {}",
            show(v)
        ));
    }
    match parse_u64(digits).and_then(|n| u32::try_from(n).ok()) {
        Some(n) if n < 1 << 31 => Ok((n, method)),
        _ => Err(format!("CSeq number {} is not below 2^31", show(digits))),
    }
}

fn check_max_forwards(v: &[u8]) -> Result<(), String> {
    if !is_digits(v) {
        return Err(format!("Max-Forwards {} is not a number", show(v)));
    }
    match parse_u64(v) {
        Some(n) if n <= 255 => Ok(()),
        _ => Err(format!("Max-Forwards {} exceeds 255", show(v))),
    }
}

/// `callid = word [ "@" word ]`.
fn check_call_id(v: &[u8]) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty Call-ID".to_string());
    }
    let mut parts = v.split(|&b| b == b'@');
    let ok = match (parts.next(), parts.next(), parts.next()) {
        (Some(w), None, _) => is_word(w),
        (Some(w1), Some(w2), None) => is_word(w1) && is_word(w2),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("Call-ID {} is not word[@word]", show(v)))
    }
}

/// `delta-seconds` no larger than 2^32-1.
fn check_delta_seconds(v: &[u8], what: &str) -> Result<(), String> {
    if !is_digits(v) {
        return Err(format!("{what} {} is not a number of seconds", show(v)));
    }
    match parse_u64(v) {
        Some(n) if n <= u64::from(u32::MAX) => Ok(()),
        _ => Err(format!("{what} {} exceeds 2^32-1", show(v))),
    }
}

/// `rfc1123-date`, which SIP restricts to GMT (RFC 3261 §20.17).
fn check_date(v: &[u8]) -> Result<(), String> {
    let zone = v.rsplit(|&b| b == b' ').next().unwrap_or_default();
    if zone != b"GMT" {
        return Err(format!("the Date must be in GMT, not {}", show(zone)));
    }
    const DAYS: &[&[u8]] = &[
        b"Mon,", b"Tue,", b"Wed,", b"Thu,", b"Fri,", b"Sat,", b"Sun,",
    ];
    const MONTHS: &[&[u8]] = &[
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let parts: Vec<&[u8]> = v.split(|&b| b == b' ').collect();
    let ok = match parts.as_slice() {
        [wkday, day, month, year, time, _] => {
            let clock: Vec<&[u8]> = time.split(|&b| b == b':').collect();
            DAYS.contains(wkday)
                && (1..=2).contains(&day.len())
                && in_range(day, 1, 31)
                && MONTHS.contains(month)
                && year.len() == 4
                && is_digits(year)
                && match clock.as_slice() {
                    [h, m, s] => {
                        h.len() == 2
                            && m.len() == 2
                            && s.len() == 2
                            && in_range(h, 0, 23)
                            && in_range(m, 0, 59)
                            && in_range(s, 0, 60)
                    }
                    _ => false,
                }
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("malformed Date {}", show(v)))
    }
}

/// A Via header value: one or more comma-separated `sent-protocol LWS sent-by
/// *(SEMI via-params)`. Returns the number of values.
fn parse_via(v: &[u8]) -> Result<usize, String> {
    let mut c = Cur::new(v);
    let mut values = 0usize;
    loop {
        c.skip_ws();
        if c.eof() {
            return Err(if values == 0 {
                "empty Via".to_string()
            } else {
                "empty value after a comma in Via".to_string()
            });
        }
        for (i, part) in ["protocol name", "protocol version", "transport"]
            .iter()
            .enumerate()
        {
            if i > 0 {
                c.skip_ws();
                if !c.eat(b'/') {
                    return Err(format!("malformed sent-protocol in Via {}", show(v)));
                }
                c.skip_ws();
            }
            if c.token().is_empty() {
                return Err(format!("missing {part} in Via {}", show(v)));
            }
        }
        if !c.skip_ws() {
            return Err(format!(
                "no whitespace between sent-protocol and sent-by in Via {}",
                show(v)
            ));
        }
        let host = if c.peek() == Some(b'[') {
            let h = c.take_while(|b| b != b']');
            if !c.eat(b']') {
                return Err(format!("unterminated IPv6 reference in Via {}", show(v)));
            }
            h
        } else {
            // '_' is not in the hostname grammar but common enough to let through.
            c.take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        if host.is_empty() {
            return Err(format!("missing sent-by host in Via {}", show(v)));
        }
        c.skip_ws();
        if c.eat(b':') {
            c.skip_ws();
            let port = c.take_while(|b| b.is_ascii_digit());
            if !in_range(port, 0, 65535) {
                return Err(format!("invalid port in Via {}", show(v)));
            }
        }
        params(&mut c, "Via")?;
        values = values.saturating_add(1);
        c.skip_ws();
        if c.eof() {
            return Ok(values);
        }
        if !c.eat(b',') {
            return Err(unexpected(&c, "Via"));
        }
    }
}

/// What the edge needs from a name-addr / addr-spec with its header parameters.
#[derive(Debug, Default)]
struct Addr<'a> {
    uri: &'a [u8],
    expires: Option<&'a [u8]>,
}

/// From or To: exactly one address.
fn parse_single_addr<'a>(v: &'a [u8], hdr: &str) -> Result<Addr<'a>, String> {
    let mut c = Cur::new(v);
    let addr = parse_addr(&mut c, hdr)?;
    c.skip_ws();
    if c.eof() {
        Ok(addr)
    } else if c.peek() == Some(b',') {
        Err(format!("more than one address in {hdr}"))
    } else {
        Err(unexpected(&c, hdr))
    }
}

/// Contact: `*` or a comma-separated list of addresses, `expires` within 2^32-1.
fn check_contact(v: &[u8]) -> Result<(), String> {
    if v == b"*" {
        return Ok(());
    }
    let mut c = Cur::new(v);
    loop {
        let addr = parse_addr(&mut c, "Contact")?;
        if let Some(expires) = addr.expires {
            check_delta_seconds(expires, "Contact expires")?;
        }
        c.skip_ws();
        if c.eof() {
            return Ok(());
        }
        if !c.eat(b',') {
            return Err(unexpected(&c, "Contact"));
        }
    }
}

/// `( name-addr / addr-spec ) *( SEMI generic-param )`.
fn parse_addr<'a>(c: &mut Cur<'a>, hdr: &str) -> Result<Addr<'a>, String> {
    c.skip_ws();
    let uri = match c.peek() {
        None | Some(b',') => return Err(format!("empty address in {hdr}")),
        Some(b'"') => {
            c.quoted()
                .map_err(|e| format!("{e} in the display name of {hdr}"))?;
            c.skip_ws();
            if c.peek() != Some(b'<') {
                return Err(format!(
                    "the quoted display name in {hdr} is not followed by <URI>"
                ));
            }
            angle_uri(c, hdr)?
        }
        Some(b'<') => angle_uri(c, hdr)?,
        Some(_) => {
            let save = c.pos;
            let word = c.token();
            if c.peek() == Some(b':') && is_scheme(word) {
                // addr-spec: no <>, so the URI ends at the first ';' (RFC 3261 §20.10).
                c.pos = save;
                let uri = c.take_while(|b| !matches!(b, b' ' | b'\t' | b';' | b','));
                if let Some(&b) = uri.iter().find(|&&b| matches!(b, b'<' | b'>' | b'"')) {
                    return Err(format!("unbalanced {} in the URI of {hdr}", show_byte(b)));
                }
                if uri.contains(&b'?') {
                    return Err(format!(
                        "the URI of {hdr} has escaped headers (?...) but is not enclosed in <>"
                    ));
                }
                uri
            } else if word.is_empty() {
                return Err(format!(
                    "{hdr} starts with {} instead of a display name or URI",
                    show_byte(c.peek().unwrap_or_default())
                ));
            } else {
                // display-name = *(token LWS)
                loop {
                    c.skip_ws();
                    match c.peek() {
                        Some(b'<') => break,
                        Some(b) if is_token_char(b) => {
                            c.token();
                        }
                        None => {
                            return Err(format!(
                                "{hdr} is neither a URI nor a display name with <URI>"
                            ))
                        }
                        Some(_) => {
                            return Err(format!(
                                "the display name in {hdr} is neither tokens nor a quoted string"
                            ))
                        }
                    }
                }
                angle_uri(c, hdr)?
            }
        }
    };
    let mut addr = Addr {
        uri,
        ..Addr::default()
    };
    for (name, value) in params(c, hdr)? {
        if name.eq_ignore_ascii_case(b"expires") {
            addr.expires = value.or(Some(&[]));
        }
    }
    Ok(addr)
}

/// `"<" URI ">"`, no whitespace inside (RFC 3261 LAQUOT / RAQUOT).
fn angle_uri<'a>(c: &mut Cur<'a>, hdr: &str) -> Result<&'a [u8], String> {
    c.eat(b'<');
    let uri = c.take_while(|b| b != b'>');
    if !c.eat(b'>') {
        return Err(format!("unbalanced < in {hdr}"));
    }
    if uri.is_empty() {
        return Err(format!("empty <> in {hdr}"));
    }
    if uri.iter().any(|&b| matches!(b, b' ' | b'\t')) {
        return Err(format!("whitespace inside the <> of {hdr}"));
    }
    if let Some(&b) = uri.iter().find(|&&b| matches!(b, b'<' | b'"')) {
        return Err(format!("stray {} inside the <> of {hdr}", show_byte(b)));
    }
    if uri_scheme(uri).is_none() {
        return Err(format!("the URI {} in {hdr} has no scheme", show(uri)));
    }
    Ok(uri)
}

/// A parameter's name and value, if it has one.
type Param<'a> = (&'a [u8], Option<&'a [u8]>);

/// `*( SEMI generic-param )`, each `token [ EQUAL gen-value ]`; no empty parameters.
fn params<'a>(c: &mut Cur<'a>, hdr: &str) -> Result<Vec<Param<'a>>, String> {
    let mut out = Vec::new();
    loop {
        c.skip_ws();
        if !c.eat(b';') {
            return Ok(out);
        }
        c.skip_ws();
        let name = c.token();
        if name.is_empty() {
            return Err(format!("empty parameter in {hdr}"));
        }
        c.skip_ws();
        let mut value = None;
        if c.eat(b'=') {
            c.skip_ws();
            let v = if c.peek() == Some(b'"') {
                c.quoted()
                    .map_err(|e| format!("{e} in the {} parameter of {hdr}", show(name)))?
            } else {
                c.take_while(|b| is_token_char(b) || matches!(b, b':' | b'[' | b']'))
            };
            if v.is_empty() {
                return Err(format!(
                    "the {} parameter of {hdr} has an empty or invalid value",
                    show(name)
                ));
            }
            value = Some(v);
        }
        out.push((name, value));
    }
}

fn unexpected(c: &Cur<'_>, hdr: &str) -> String {
    format!(
        "unexpected {} in {hdr}",
        show_byte(c.peek().unwrap_or_default())
    )
}

/// The scheme of `uri` (before its first ':') if it is a valid scheme name.
fn uri_scheme(uri: &[u8]) -> Option<&[u8]> {
    let colon = uri.iter().position(|&b| b == b':')?;
    let scheme = uri.get(..colon)?;
    is_scheme(scheme).then_some(scheme)
}

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &[u8]) -> bool {
    matches!(s.first(), Some(b) if b.is_ascii_alphabetic())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

// ---------------------------------------------------------------------------------------
// The stateless response.

fn reply(scan: &Scan<'_>, problem: Problem) -> EdgeVerdict {
    let bytes = build_response(scan, &problem);
    EdgeVerdict::Reply {
        status: problem.status,
        reason: problem.reason,
        bytes,
    }
}

fn phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        501 => "Not Implemented",
        505 => "Version Not Supported",
        _ => "Error",
    }
}

/// RFC 3261 §8.2.6: Via (all, in order), From, To (tagged), Call-ID and CSeq copied.
fn build_response(scan: &Scan<'_>, problem: &Problem) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(
        format!("SIP/2.0 {} {}\r\n", problem.status, phrase(problem.status)).as_bytes(),
    );
    for via in scan.all(Kind::Via) {
        push_header(&mut out, "Via", &via.value);
    }
    if let Some(from) = scan.first(Kind::From) {
        push_header(&mut out, "From", &from.value);
    }
    if let Some(to) = scan.first(Kind::To) {
        let mut value = to.value.clone();
        if to_needs_tag(&to.value) {
            value.extend_from_slice(format!(";tag=pc{:016x}", to_tag(scan)).as_bytes());
        }
        push_header(&mut out, "To", &value);
    }
    if let Some(call_id) = scan.first(Kind::CallId) {
        push_header(&mut out, "Call-ID", &call_id.value);
    }
    if let Some(cseq) = scan.first(Kind::CSeq) {
        push_header(&mut out, "CSeq", &cseq.value);
    }
    for (name, value) in &problem.extra {
        push_header(&mut out, name, value.as_bytes());
    }
    let warning = format!("399 {WARN_AGENT} \"{}\"", quote_text(&problem.reason));
    push_header(&mut out, "Warning", warning.as_bytes());
    push_header(&mut out, "Content-Length", b"0");
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend(
        value
            .iter()
            .map(|&b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Whether a To value lacks a tag parameter and can take one at its end: a lenient scan,
/// as the To may be the malformed part. An unterminated quoted string or `<` gets no tag,
/// there is no sound place for one.
fn to_needs_tag(v: &[u8]) -> bool {
    let (mut quoted, mut angle, mut escaped, mut param_start) = (false, false, false, false);
    let mut i = 0usize;
    while let Some(&b) = v.get(i) {
        i += 1;
        if quoted {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b'<' => angle = true,
            b'>' => angle = false,
            b';' if !angle => param_start = true,
            b' ' | b'\t' => {}
            _ if param_start => {
                param_start = false;
                let name = v.get(i - 1..).unwrap_or_default();
                let len = name.iter().take_while(|&&c| is_token_char(c)).count();
                if name
                    .get(..len)
                    .is_some_and(|n| n.eq_ignore_ascii_case(b"tag"))
                {
                    return false;
                }
            }
            _ => {}
        }
    }
    !quoted && !angle
}

/// The same To tag for every retransmission of a request (RFC 3261 §8.2.6.2), with no
/// state: a hash of what identifies the request.
fn to_tag(scan: &Scan<'_>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for kind in [Kind::CallId, Kind::From, Kind::CSeq, Kind::Via] {
        for &b in field_value(scan, kind).iter().chain(b"\n") {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Text safe inside a quoted-string.
fn quote_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Small helpers.

/// A cursor over an unfolded header value.
#[derive(Debug)]
struct Cur<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cur<'a> {
    fn new(s: &'a [u8]) -> Cur<'a> {
        Cur { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eof(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips spaces and tabs; whether there were any.
    fn skip_ws(&mut self) -> bool {
        !self.take_while(|b| matches!(b, b' ' | b'\t')).is_empty()
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if !f(b) {
                break;
            }
            self.pos += 1;
        }
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn token(&mut self) -> &'a [u8] {
        self.take_while(is_token_char)
    }

    /// A quoted-string starting at the cursor, quotes included.
    fn quoted(&mut self) -> Result<&'a [u8], &'static str> {
        let start = self.pos;
        if !self.eat(b'"') {
            return Err("missing quoted string");
        }
        loop {
            match self.peek() {
                None => return Err("unterminated quoted string"),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(self.s.get(start..self.pos).unwrap_or_default());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        None => return Err("unterminated quoted string"),
                        Some(b'\r' | b'\n') => return Err("bad escape in quoted string"),
                        Some(_) => self.pos += 1,
                    }
                }
                Some(b) if (b < 0x20 && b != b'\t') || b == 0x7f => {
                    return Err("control character in quoted string")
                }
                Some(_) => self.pos += 1,
            }
        }
    }
}

/// RFC 3261 `token` characters.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// RFC 3261 `word` (Call-ID) characters.
fn is_word(w: &[u8]) -> bool {
    !w.is_empty()
        && w.iter().all(|&b| {
            is_token_char(b)
                || matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'{'
                        | b'}'
                )
        })
}

fn is_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// Decimal digits as u64; None if not digits or too large.
fn parse_u64(s: &[u8]) -> Option<u64> {
    if !is_digits(s) {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn in_range(s: &[u8], low: u64, high: u64) -> bool {
    parse_u64(s).is_some_and(|n| (low..=high).contains(&n))
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == sep)?;
    Some((s.get(..at)?, s.get(at + 1..)?))
}

fn trim(s: &[u8]) -> &[u8] {
    trim_end(s.trim_ascii_start())
}

/// Trailing spaces and tabs (and a stray CR) off.
fn trim_end(s: &[u8]) -> &[u8] {
    let end = s
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    s.get(..end).unwrap_or_default()
}

/// "A", "A and B", "A, B and C".
fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A fragment of the message fit for a log line or a Warning: at most 48 characters,
/// control and non-ASCII characters as '?'.
fn show(b: &[u8]) -> String {
    const MAX: usize = 48;
    let mut out: String = b
        .iter()
        .take(MAX)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    if b.len() > MAX {
        out.push_str("...");
    }
    out
}

fn show_byte(b: u8) -> String {
    if (0x21..0x7f).contains(&b) {
        format!("'{}'", char::from(b))
    } else {
        format!("byte 0x{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid OPTIONS with `extra` header lines appended and the request line `line`.
    fn request(line: &str, headers: &[&str]) -> Vec<u8> {
        let mut s = format!("{line}\r\n");
        for h in headers {
            s.push_str(h);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    const VIA: &str = "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK-1";
    const FROM: &str = "From: <sip:a@example.com>;tag=1";
    const TO: &str = "To: <sip:b@example.com>";
    const CALL_ID: &str = "Call-ID: c1@a.example.com";
    const CSEQ: &str = "CSeq: 1 OPTIONS";
    const MF: &str = "Max-Forwards: 70";
    const CL: &str = "Content-Length: 0";
    const LINE: &str = "OPTIONS sip:b@example.com SIP/2.0";

    fn base() -> Vec<&'static str> {
        vec![VIA, FROM, TO, CALL_ID, CSEQ, MF, CL]
    }

    fn with(replace: &str, by: Option<&'static str>) -> Vec<&'static str> {
        let name = replace.split(':').next().unwrap_or_default();
        let mut h: Vec<&str> = base()
            .into_iter()
            .filter(|l| l.split(':').next() != Some(name))
            .collect();
        h.extend(by);
        h
    }

    fn run(raw: &[u8]) -> EdgeVerdict {
        let parsed = SipMessage::try_from(raw);
        let err = parsed.as_ref().err().map(|e| e.to_string());
        match (&parsed, &err) {
            (Ok(m), _) => check(raw, Ok(m), false),
            (Err(_), Some(e)) => check(raw, Err(e), false),
            (Err(_), None) => unreachable!(),
        }
    }

    #[track_caller]
    fn expect(raw: &[u8], status: u16, reason_part: &str) {
        match run(raw) {
            EdgeVerdict::Reply {
                status: s, reason, ..
            } => {
                assert_eq!(s, status, "{reason}");
                assert!(
                    reason.contains(reason_part),
                    "reason {reason:?} lacks {reason_part:?}"
                );
            }
            other => panic!("expected {status}, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_request_is_accepted() {
        assert_eq!(run(&request(LINE, &base())), EdgeVerdict::Accept);
    }

    #[test]
    fn the_request_line_is_strict() {
        for (line, part) in [
            ("OPTIONS  sip:b@example.com SIP/2.0", "more than one space"),
            ("OPTIONS sip:b@example.com SIP/2.0 ", "whitespace after"),
            (
                "OPTIONS sip:b@example.com; lr SIP/2.0",
                "contains whitespace",
            ),
            ("OPTIONS <sip:b@example.com> SIP/2.0", "enclosed in <>"),
            (
                "OPTIONS sip:b@example.com?Route=x SIP/2.0",
                "escaped headers",
            ),
            ("OPTIONS sip:b@example.com", "lacks"),
            ("OPTIONS sip:b@example.com SIP/2.x", "malformed SIP-Version"),
            ("OPTIONS sip:b@example.com\tSIP/2.0", "tab"),
        ] {
            expect(&request(line, &base()), 400, part);
        }
        // A '?' inside the userinfo is not a header part.
        assert_eq!(
            run(&request("OPTIONS sip:a?b@example.com SIP/2.0", &base())),
            EdgeVerdict::Accept
        );
    }

    #[test]
    fn other_versions_get_505_and_extension_methods_501() {
        expect(
            &request("OPTIONS sip:b@example.com SIP/3.0", &base()),
            505,
            "SIP/3.0",
        );
        let h = with(CSEQ, Some("CSeq: 1 FROB"));
        match run(&request("FROB sip:b@example.com SIP/2.0", &h)) {
            EdgeVerdict::Reply { status, bytes, .. } => {
                assert_eq!(status, 501);
                let text = String::from_utf8_lossy(&bytes);
                assert!(text.contains(&format!("\r\nAllow: {ALLOW}\r\n")), "{text}");
            }
            other => panic!("{other:?}"),
        }
        // Methods are case-sensitive: "options" is an extension method.
        let h = with(CSEQ, Some("CSeq: 1 options"));
        expect(
            &request("options sip:b@example.com SIP/2.0", &h),
            501,
            "options",
        );
    }

    #[test]
    fn unsupported_schemes_get_416() {
        expect(
            &request("OPTIONS mailto:b@example.com SIP/2.0", &base()),
            416,
            "mailto",
        );
        assert_eq!(
            run(&request("OPTIONS tel:+15551234567 SIP/2.0", &base())),
            EdgeVerdict::Accept
        );
        expect(
            &request("OPTIONS example.com SIP/2.0", &base()),
            400,
            "no scheme",
        );
    }

    #[test]
    fn unknown_require_gets_420_listing_exactly_the_unknown_tags() {
        let mut h = base();
        h.push("Require: timer, foo");
        h.push("Require: bar, foo");
        match run(&request(LINE, &h)) {
            EdgeVerdict::Reply { status, bytes, .. } => {
                assert_eq!(status, 420);
                let text = String::from_utf8_lossy(&bytes);
                assert!(text.contains("\r\nUnsupported: foo, bar\r\n"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        let mut h = base();
        h.push("Require: timer");
        assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept);
        let mut h = with(CSEQ, Some("CSeq: 1 CANCEL"));
        h.push("Require: foo");
        assert_eq!(
            run(&request("CANCEL sip:b@example.com SIP/2.0", &h)),
            EdgeVerdict::Accept
        );
    }

    #[test]
    fn mandatory_headers_once_each() {
        expect(
            &request(LINE, &with(CALL_ID, None)),
            400,
            "missing Call-ID header",
        );
        let h: Vec<&str> = vec![VIA, CSEQ];
        expect(
            &request(LINE, &h),
            400,
            "missing To, From and Call-ID headers",
        );
        let mut h = base();
        h.push("t: <sip:c@example.com>");
        h.push("Max-Forwards: 3");
        expect(
            &request(LINE, &h),
            400,
            "more than one To and Max-Forwards header",
        );
        // Without any Via there is no one to answer.
        assert!(matches!(
            run(&request(LINE, &with(VIA, None))),
            EdgeVerdict::Drop { .. }
        ));
    }

    #[test]
    fn cseq_rules() {
        for (cseq, part) in [
            (
                "CSeq: 1 INVITE",
                "CSeq method INVITE does not match request method OPTIONS",
            ),
            ("CSeq: 2147483648 OPTIONS", "not below 2^31"),
            ("CSeq: 99999999999999999999999 OPTIONS", "not below 2^31"),
            ("CSeq: OPTIONS", "does not start with a number"),
            ("CSeq: 1OPTIONS", "lacks whitespace"),
            ("CSeq: 1 OPTIONS x", "unexpected text"),
        ] {
            let h = with(CSEQ, Some(cseq));
            expect(&request(LINE, &h), 400, part);
        }
        let h = with(CSEQ, Some("CSeq: 2147483647 OPTIONS"));
        assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept);
    }

    #[test]
    fn numeric_header_limits() {
        for (line, part) in [
            ("Max-Forwards: 256", "Max-Forwards 256 exceeds 255"),
            ("Max-Forwards: -1", "not a number"),
            ("Expires: 4294967296", "Expires 4294967296 exceeds 2^32-1"),
            ("Expires: soon", "not a number of seconds"),
            ("Content-Length: -1", "not a non-negative integer"),
            ("Content-Length: 99999999999999999999999", "too large"),
            (
                "Content-Length: 5",
                "Content-Length 5 exceeds the 0 body bytes received",
            ),
        ] {
            let name = line.split(':').next().unwrap_or_default();
            let mut h: Vec<&str> = base()
                .into_iter()
                .filter(|l| l.split(':').next() != Some(name))
                .collect();
            h.push(line);
            expect(&request(LINE, &h), 400, part);
        }
        let mut h = with(MF, Some("Max-Forwards: 0"));
        h.push("Expires: 4294967295");
        assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept);
    }

    #[test]
    fn body_length_on_datagrams_and_streams() {
        let mut raw = request(LINE, &with(CL, Some("Content-Length: 4")));
        raw.extend_from_slice(b"abc");
        let parsed = SipMessage::try_from(raw.as_slice()).ok();
        let parsed = parsed.as_ref().ok_or("unparsable");
        assert!(matches!(
            check(&raw, parsed, false),
            EdgeVerdict::Reply { status: 400, .. }
        ));
        assert_eq!(check(&raw, parsed, true), EdgeVerdict::Accept);
        // Longer than announced: truncated (RFC 3261 §18.3).
        raw.extend_from_slice(b"defgh");
        assert_eq!(run(&raw), EdgeVerdict::Accept);
        // Two Content-Lengths.
        let mut h = base();
        h.push("l: 0");
        expect(&request(LINE, &h), 400, "2 Content-Length headers");
    }

    #[test]
    fn address_headers() {
        for (to, part) in [
            (
                "To: \"Bob <sip:b@example.com>",
                "unterminated quoted string in the display name of To",
            ),
            (
                "To: Bob, Jr. <sip:b@example.com>",
                "display name in To is neither",
            ),
            (
                "To: < sip:b@example.com >",
                "whitespace inside the <> of To",
            ),
            ("To: <sip:b@example.com", "unbalanced < in To"),
            ("To: sip:b@example.com>", "unbalanced '>'"),
            ("To: <sip:b@example.com>;;tag=1", "empty parameter in To"),
            (
                "To: <sip:b@example.com>, <sip:c@example.com>",
                "more than one address in To",
            ),
            (
                "To: <sip:b@example.com>;x=\"open",
                "unterminated quoted string in the x parameter",
            ),
            ("To: <b@example.com>", "has no scheme"),
        ] {
            let h = with(TO, Some(to));
            expect(&request(LINE, &h), 400, part);
        }
        for to in [
            "To: Bob <sip:b@example.com>",
            "To: Bob<sip:b@example.com>",
            "To: \"Bob \\\"B\\\" Smith\" <sip:b@example.com> ; tag = x",
            "t: sip:b@example.com;tag=2",
            "To: tel:+15551234567",
        ] {
            let h = with(TO, Some(to));
            assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept, "{to}");
        }
    }

    #[test]
    fn contact_rules() {
        for (contact, part) in [
            ("Contact: sip:a@example.com?Route=x", "escaped headers"),
            (
                "Contact: <sip:a@example.com>;;;;",
                "empty parameter in Contact",
            ),
            (
                "Contact: <sip:a@example.com>;expires=4294967296",
                "Contact expires 4294967296 exceeds",
            ),
            ("Contact: <sip:a@example.com>,", "empty address in Contact"),
            (
                "Contact: sip:u;x=a@example.com",
                "unexpected '@' in Contact",
            ),
        ] {
            let mut h = base();
            h.push(contact);
            expect(&request(LINE, &h), 400, part);
        }
        for contact in [
            "Contact: *",
            "m: <sip:a@example.com?Route=x>",
            "Contact: sip:a@example.com;unknownparam, \"A\" <sip:b@example.com>;q=0.5;expires=60",
            "Contact: <sip:a@example.com>;+sip.instance=\"<urn:uuid:1>\"",
        ] {
            let mut h = base();
            h.push(contact);
            assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept, "{contact}");
        }
    }

    #[test]
    fn via_rules() {
        for (via, part) in [
            (
                "Via: SIP/2.0/UDP a.example.com;;,;,,",
                "empty parameter in Via",
            ),
            (
                "Via: SIP/2.0/UDP a.example.com,",
                "empty value after a comma",
            ),
            ("Via: SIP/2.0 a.example.com", "malformed sent-protocol"),
            ("Via: SIP/2.0/UDPa.example.com", "no whitespace"),
            ("Via: SIP/2.0/UDP a.example.com:99999", "invalid port"),
            (
                "Via: SIP/2.0/UDP a.example.com;branch=",
                "empty or invalid value",
            ),
        ] {
            let h = with(VIA, Some(via));
            expect(&request(LINE, &h), 400, part);
        }
        let h = with(
            VIA,
            Some("v: SIP / 2.0 / TCP [2001:db8::1] : 5060 ; branch = z9hG4bK1 ; received=2001:db8::2, SIP/2.0/UDP b"),
        );
        assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept);
    }

    #[test]
    fn date_and_call_id() {
        let mut h = base();
        h.push("Date: Fri, 01 Jan 2010 16:00:00 EST");
        expect(&request(LINE, &h), 400, "GMT, not EST");
        let mut h = base();
        h.push("Date: Fri, 1 Jan 10 16:00:00 GMT");
        expect(&request(LINE, &h), 400, "malformed Date");
        let mut h = base();
        h.push("Date: Fri, 01 Jan 2010 16:00 GMT");
        expect(&request(LINE, &h), 400, "malformed Date");
        let mut h = base();
        h.push("Date: Sat, 13 Nov 2010 23:29:00 GMT");
        assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept);
        let mut h = base();
        h.push("Date: Mon, 4 Mar 2024 09:05:00 GMT");
        assert_eq!(run(&request(LINE, &h)), EdgeVerdict::Accept);
        let h = with(CALL_ID, Some("Call-ID: a b"));
        expect(&request(LINE, &h), 400, "not word[@word]");
        let h = with(CALL_ID, Some("i: a@b@c"));
        expect(&request(LINE, &h), 400, "not word[@word]");
    }

    #[test]
    fn register_needs_a_sip_address_of_record() {
        let h = with(CSEQ, Some("CSeq: 1 REGISTER"));
        let h: Vec<&str> = h
            .into_iter()
            .filter(|l| !l.starts_with("To:"))
            .chain(["To: isbn:2983792873"])
            .collect();
        expect(
            &request("REGISTER sip:example.com SIP/2.0", &h),
            400,
            "REGISTER must be a sip or sips address-of-record",
        );
    }

    #[test]
    fn the_400_copies_the_transaction_headers_and_tags_the_to() {
        let raw = b"INVITE sip:b@example.com SIP/2.0\r\n\
            v: SIP/2.0/UDP one.example.com;branch=z9hG4bK1\r\n\
            Via: SIP/2.0/UDP two.example.com\r\n ;branch=z9hG4bK2\r\n\
            f: <sip:a@example.com>;tag=9\r\n\
            t: sip:b@example.com\r\n\
            i: xyz@example.com\r\n\
            CSeq: 7\r\n INVITE\r\n\
            Content-Length: 10\r\n\r\n"
            .to_vec();
        let EdgeVerdict::Reply {
            status,
            reason,
            bytes,
        } = run(&raw)
        else {
            panic!("no reply");
        };
        assert_eq!(status, 400);
        assert_eq!(
            reason,
            "Content-Length 10 exceeds the 0 body bytes received"
        );
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let again = match run(&raw) {
            EdgeVerdict::Reply { bytes, .. } => bytes,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            again, bytes,
            "the same request gets the same response, To tag and all"
        );
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.first(), Some(&"SIP/2.0 400 Bad Request"));
        assert_eq!(
            lines.get(1),
            Some(&"Via: SIP/2.0/UDP one.example.com;branch=z9hG4bK1")
        );
        assert_eq!(
            lines.get(2),
            Some(&"Via: SIP/2.0/UDP two.example.com ;branch=z9hG4bK2")
        );
        assert_eq!(lines.get(3), Some(&"From: <sip:a@example.com>;tag=9"));
        assert!(lines
            .get(4)
            .is_some_and(|l| l.starts_with("To: sip:b@example.com;tag=pc")));
        assert_eq!(lines.get(5), Some(&"Call-ID: xyz@example.com"));
        assert_eq!(lines.get(6), Some(&"CSeq: 7 INVITE"));
        assert_eq!(
            lines.get(7),
            Some(&"Warning: 399 papercup \"Content-Length 10 exceeds the 0 body bytes received\"")
        );
        assert_eq!(lines.get(8), Some(&"Content-Length: 0"));
        assert!(text.ends_with("\r\n\r\n"));
        let parsed = SipMessage::try_from(bytes.as_slice());
        assert!(parsed.is_ok(), "{text}");
    }

    #[test]
    fn an_existing_to_tag_is_kept_and_quotes_in_reasons_are_escaped() {
        let mut h: Vec<&str> = with(CSEQ, Some("CSeq: 1 \"OPTIONS"))
            .into_iter()
            .filter(|l| !l.starts_with("To:"))
            .collect();
        h.push("To: <sip:b@example.com>;tag=abc");
        let EdgeVerdict::Reply { bytes, .. } = run(&request(LINE, &h)) else {
            panic!("no reply");
        };
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("\r\nTo: <sip:b@example.com>;tag=abc\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq 1 \\\"OPTIONS"), "{text}");
    }

    #[test]
    fn responses_are_checked_and_never_answered() {
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n\
            From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n\
            Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(run(ok.as_bytes()), EdgeVerdict::Accept);
        for (from, to) in [
            ("SIP/2.0 200 OK", "SIP/2.0 700 Odd"),
            ("SIP/2.0 200 OK", "SIP/2.0 4294967301 Big"),
            ("SIP/2.0 200 OK", "SIP/3.0 200 OK"),
            ("CSeq: 1 INVITE", "CSeq: 4294967296 INVITE"),
            ("CSeq: 1 INVITE", "CSeq: 1 INVITE\r\nCSeq: 2 INVITE"),
            ("Call-ID: c1\r\n", ""),
            (
                "branch=z9hG4bK1",
                "branch=z9hG4bK1, SIP/2.0/UDP 255.255.255.255",
            ),
            ("Content-Length: 0", "Content-Length: 10"),
        ] {
            let bad = ok.replace(from, to);
            assert!(
                matches!(run(bad.as_bytes()), EdgeVerdict::Drop { .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn garbage_and_acks() {
        assert!(matches!(run(b""), EdgeVerdict::Drop { .. }));
        assert!(matches!(run(b"\x00\x01\x02"), EdgeVerdict::Drop { .. }));
        // Garbage that still names a transaction gets its 400.
        expect(
            b" INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCall-ID: x\r\n\r\n",
            400,
            "begins with whitespace",
        );
        let h = with(CSEQ, Some("CSeq: 1 ACK"));
        let h: Vec<&str> = h.into_iter().filter(|l| !l.starts_with("To:")).collect();
        assert!(matches!(
            run(&request("ACK sip:b@example.com SIP/2.0", &h)),
            EdgeVerdict::Drop { .. }
        ));
    }

    #[test]
    fn header_section_structure() {
        let mut h = base();
        h.push("NoColonHere");
        expect(&request(LINE, &h), 400, "without a colon");
        let mut h = base();
        h.push("Bad Name: x");
        expect(&request(LINE, &h), 400, "invalid header name");
        let mut h = base();
        h.push("X-A: a\rb");
        expect(&request(LINE, &h), 400, "stray CR");
        let raw = b"OPTIONS sip:b@example.com SIP/2.0\r\n folded\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\r\n";
        expect(raw, 400, "folded line");
        // No empty line at the end of the headers.
        let mut raw = request(LINE, &base());
        raw.truncate(raw.len() - 2);
        expect(&raw, 400, "without the empty line");
    }

    #[test]
    fn a_to_tag_is_added_only_where_it_fits() {
        for (to, needs) in [
            ("<sip:b@example.com>", true),
            ("sip:b@example.com", true),
            ("<sip:b@example.com;tag=1>", true),
            ("\"x;tag=1\" <sip:b@example.com>", true),
            ("< sip:b@example.com >", true),
            ("<sip:b@example.com> ; TAG = 1", false),
            ("sip:b@example.com;tag=1", false),
            ("\"Mr. J. User <sip:j.user@example.com>", false),
            ("<sip:b@example.com", false),
        ] {
            assert_eq!(to_needs_tag(to.as_bytes()), needs, "{to}");
        }
    }

    #[test]
    fn reasons_and_fragments_stay_printable() {
        assert_eq!(show(b"a\x00b\xff"), "a?b?");
        assert_eq!(show(&[b'x'; 60]).len(), 51);
        assert_eq!(quote_text("a\"b\\c\u{7}"), "a\\\"b\\\\c?");
        assert_eq!(join_and(&["A", "B", "C"]), "A, B and C");
    }
}
