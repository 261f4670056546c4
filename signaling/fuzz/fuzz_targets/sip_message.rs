//! Any bytes through rsipstack's parser and then the edge check, on a datagram and on a
//! stream transport, as the transport's incoming filter runs them. Neither may panic, and
//! whatever the edge answers must be a SIP response the parser reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsipstack::sip::SipMessage;
use signaling::edge::{check, EdgeVerdict};

fuzz_target!(|data: &[u8]| {
    let parsed = SipMessage::try_from(data);
    let error = match &parsed {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    for reliable in [false, true] {
        let verdict = match &parsed {
            Ok(message) => check(data, Ok(message), reliable),
            Err(_) => check(data, Err(&error), reliable),
        };
        if let EdgeVerdict::Reply { bytes, status, .. } = verdict {
            match SipMessage::try_from(bytes.as_slice()) {
                Ok(SipMessage::Response(response)) => {
                    assert_eq!(response.status_code.code(), status)
                }
                other => panic!("reply is not a response: {other:?}"),
            }
        }
    }
});
