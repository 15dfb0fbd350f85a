//! The W3C Trace Context `traceparent` header (Trace Context Level 1,
//! <https://www.w3.org/TR/trace-context-1/>): parsed strictly, formatted for the
//! response, and fresh ids when a request starts a trace.
//!
//! Parsing never fails a request: anything invalid is `None`, and the request
//! starts a trace of its own. Invalid (§3.2.2, §3.2.4): a length other than 55 for
//! version `00`, version `ff`, any uppercase or non-hex digit, a missing dash, an
//! all-zero trace-id or parent-id. A higher version is read as `00` as far as
//! `00` goes, if what follows is nothing or a dash (§3.2.4). No allocation: ids
//! are arrays on the stack.

use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header, in requests and responses.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Length of a version-00 `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

/// 16 bytes, never all zero; shown as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// 8 bytes, never all zero; shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

/// One hop of a trace: which trace, which span, and whether it is sampled (the
/// only trace flag Level 1 defines; the others are dropped, as it asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    /// In a request: the caller's span. In a response: ours.
    pub span_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    /// The request's valid `traceparent`, if it has exactly one (two are ambiguous:
    /// restart the trace, as the W3C test suite expects).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => Self::parse(value.as_bytes()),
            _ => None,
        }
    }

    /// Parses one header value (optional whitespace around it is allowed).
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        if value.len() < LEN || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let [version] = hex::<1>(&value[..2])?;
        match version {
            0xff => return None,
            0x00 if value.len() != LEN => return None,
            // A later version may append fields, after a dash.
            _ if value.len() > LEN && value[LEN] != b'-' => return None,
            _ => {}
        }
        let trace_id = hex::<16>(&value[3..35])?;
        let span_id = hex::<8>(&value[36..52])?;
        let [flags] = hex::<1>(&value[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id: TraceId(trace_id), span_id: SpanId(span_id), sampled: flags & 0x01 != 0 })
    }

    /// Our hop of the trace `parent` names, or the first hop of a new trace
    /// (not sampled: nothing was recorded before us, and a new trace is sampled
    /// only where spans are exported).
    pub fn child_of(parent: Option<Self>) -> Self {
        match parent {
            Some(parent) => Self { span_id: SpanId::random(), ..parent },
            None => Self { trace_id: TraceId::random(), span_id: SpanId::random(), sampled: false },
        }
    }

    /// `00-<trace-id>-<span-id>-<flags>`: the header value's bytes, on the stack.
    pub fn to_bytes(&self) -> [u8; LEN] {
        let mut out = [b'-'; LEN];
        out[..2].copy_from_slice(b"00");
        write_hex(&mut out[3..35], &self.trace_id.0);
        write_hex(&mut out[36..52], &self.span_id.0);
        write_hex(&mut out[53..55], &[u8::from(self.sampled)]);
        out
    }

    /// The header value (its one allocation, in `HeaderValue`).
    pub fn to_header_value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.to_bytes()).expect("lowercase hex and dashes are a valid header value")
    }
}

impl TraceId {
    /// A random id from the thread's CSPRNG (a few nanoseconds, no system call).
    pub fn random() -> Self {
        loop {
            let id = rand::random::<[u8; 16]>();
            if id != [0; 16] {
                return Self(id);
            }
        }
    }
}

impl SpanId {
    pub fn random() -> Self {
        loop {
            let id = rand::random::<[u8; 8]>();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }
}

/// Lowercase hex digits only: `A`-`F` are invalid in `traceparent`.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 32];
        write_hex(&mut out, &self.0);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 16];
        write_hex(&mut out, &self.0);
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the W3C recommendation.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(value: &str) -> Option<TraceParent> {
        TraceParent::parse(value.as_bytes())
    }

    #[test]
    fn the_recommendations_example_is_read_field_by_field() {
        let parent = parse(EXAMPLE).expect("valid");
        assert_eq!(parent.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert_eq!(&parent.to_bytes()[..], EXAMPLE.as_bytes(), "formatting gives back the same header");
    }

    #[test]
    fn the_sampled_flag_is_the_lowest_bit_and_other_flags_are_dropped() {
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!unsampled.sampled);
        let other_bits = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").expect("valid");
        assert!(other_bits.sampled);
        assert!(other_bits.to_header_value().to_str().expect("ascii").ends_with("-01"));
        assert!(!parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").expect("valid").sampled);
    }

    #[test]
    fn whitespace_around_the_value_is_allowed() {
        assert!(parse(&format!(" {EXAMPLE}\t")).is_some());
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "",
            "00",
            "garbage",
            // Version 00 has exactly 55 characters.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b-01",
            // Version ff is invalid; versions are hex.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Uppercase is invalid anywhere.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids are invalid.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Separators are dashes, at their places.
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7.01",
            "00-4bf92f3577b34da6a3ce929d0e0e473600f067aa0ba902b7--01",
            // Non-hex digits, or bytes that are not even ASCII.
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn any_byte_anywhere_is_either_refused_or_read_back_as_written() {
        let example = EXAMPLE.as_bytes();
        for at in 0..example.len() {
            for byte in 0..=u8::MAX {
                let mut value = example.to_vec();
                value[at] = byte;
                if let Some(parent) = TraceParent::parse(&value) {
                    let mut expected = value.clone();
                    // Only the sampled bit of the flags is kept.
                    expected[53..55].copy_from_slice(if parent.sampled { b"01" } else { b"00" });
                    expected[..2].copy_from_slice(b"00");
                    assert_eq!(&parent.to_bytes()[..], &expected[..], "{:?}", String::from_utf8_lossy(&value));
                }
            }
            assert_eq!(TraceParent::parse(&example[..at]), None, "a truncated value");
        }
    }

    #[test]
    fn a_later_version_is_read_as_far_as_version_00_goes() {
        let later = parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds")
            .expect("a later version with more fields");
        assert_eq!(later.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        assert_eq!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x"), None);
        assert_eq!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"), None);
    }

    #[test]
    fn two_headers_are_ambiguous_and_ignored() {
        let mut headers = HeaderMap::new();
        headers.append(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        assert!(TraceParent::from_headers(&headers).is_some());
        headers.append(TRACEPARENT, HeaderValue::from_static(EXAMPLE));
        assert_eq!(TraceParent::from_headers(&headers), None);
        assert_eq!(TraceParent::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn a_child_keeps_the_trace_and_its_flag_with_a_span_of_its_own() {
        let parent = parse(EXAMPLE).expect("valid");
        let child = TraceParent::child_of(Some(parent));
        assert_eq!((child.trace_id, child.sampled), (parent.trace_id, parent.sampled));
        assert_ne!(child.span_id, parent.span_id);
        let root = TraceParent::child_of(None);
        assert_ne!(root.trace_id, TraceParent::child_of(None).trace_id, "a new trace each time");
        assert!(!root.sampled);
        let formatted = root.to_header_value();
        assert_eq!(parse(formatted.to_str().expect("ascii")), Some(root), "what we send, we read back");
    }
}
