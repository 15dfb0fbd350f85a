//! A JSON writer for the largest responses: the pages of articles, and an
//! article's comments.
//!
//! serde_json escapes a string one byte at a time, with a table lookup and a
//! bounds check per byte; for a page of 20 articles that was a quarter of the
//! server's instructions per request (callgrind). Nearly every string in a
//! response needs no escaping, which one branch-free pass over its bytes (the
//! compiler vectorises it) establishes, and such a string is copied whole. The
//! output is serde_json's, byte for byte: the response types keep their serde
//! derives, and the tests compare the two.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use chrono::{DateTime, Utc};

use crate::extract::JSON_UTF8;

/// A JSON document being written into memory.
#[derive(Debug)]
pub struct JsonWriter(Vec<u8>);

impl JsonWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        Self(Vec::with_capacity(bytes))
    }

    /// `json` as it is: punctuation between values written by the other methods.
    pub fn raw(&mut self, json: &str) {
        self.0.extend_from_slice(json.as_bytes());
    }

    /// The document so far, as one chunk of a streamed body.
    pub fn into_bytes(self) -> axum::body::Bytes {
        self.0.into()
    }

    /// An object, whose members `members` writes through [`Members::key`].
    pub fn object(&mut self, members: impl FnOnce(&mut Members<'_>)) {
        self.0.push(b'{');
        members(&mut Members { out: self, first: true });
        self.0.push(b'}');
    }

    /// An array of `items`, each written by `item`.
    pub fn array<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        self.0.push(b'[');
        for (i, value) in items.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            item(self, value);
        }
        self.0.push(b']');
    }

    /// `text` as a JSON string.
    pub fn string(&mut self, text: &str) {
        let bytes = text.as_bytes();
        self.0.reserve(bytes.len() + 2);
        self.0.push(b'"');
        // `|`, not `||`: without an early exit the loop vectorises.
        if bytes.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\')) {
            self.escaped(bytes);
        } else {
            self.0.extend_from_slice(bytes);
        }
        self.0.push(b'"');
    }

    /// The escapes serde_json writes: the short ones where JSON has them, else `\u00XX`.
    fn escaped(&mut self, bytes: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut done = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            let escape = match byte {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0..0x20 => b'u',
                _ => continue,
            };
            self.0.extend_from_slice(&bytes[done..at]);
            self.0.extend_from_slice(&[b'\\', escape]);
            if escape == b'u' {
                self.0.extend_from_slice(&[b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
            }
            done = at + 1;
        }
        self.0.extend_from_slice(&bytes[done..]);
    }

    /// `text` as a JSON string, or `null`.
    pub fn optional_string(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.string(text),
            None => self.raw("null"),
        }
    }

    pub fn strings<T: AsRef<str>>(&mut self, list: &[T]) {
        self.array(list, |out, text| out.string(text.as_ref()));
    }

    pub fn int(&mut self, n: i64) {
        self.raw(itoa::Buffer::new().format(n));
    }

    pub fn bool(&mut self, value: bool) {
        self.raw(if value { "true" } else { "false" });
    }

    /// As [`super::timestamp`] writes it. The text is ASCII digits and
    /// punctuation, with nothing to escape.
    pub fn timestamp(&mut self, at: DateTime<Utc>) {
        super::with_timestamp_text(at, |text| {
            self.0.push(b'"');
            self.0.extend_from_slice(text);
            self.0.push(b'"');
        });
    }
}

/// The document as a `200` JSON response.
impl IntoResponse for JsonWriter {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8))], self.0).into_response()
    }
}

/// The members of an object being written.
#[derive(Debug)]
pub struct Members<'a> {
    out: &'a mut JsonWriter,
    first: bool,
}

impl Members<'_> {
    /// Writes the next member's key (with the comma before it); the caller then
    /// writes its value to the writer returned. Keys are the API's own field
    /// names, written unescaped. Inlined, so that each key's bytes are copied
    /// as a constant of known length rather than through `memcpy`.
    #[inline(always)]
    pub fn key(&mut self, name: &str) -> &mut JsonWriter {
        if !self.first {
            self.out.0.push(b',');
        }
        self.first = false;
        self.out.0.push(b'"');
        self.out.raw(name);
        self.out.0.extend_from_slice(b"\":");
        self.out
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::JsonWriter;

    fn written(write: impl FnOnce(&mut JsonWriter)) -> String {
        let mut out = JsonWriter::with_capacity(0);
        write(&mut out);
        String::from_utf8(out.0).expect("UTF-8")
    }

    #[test]
    fn every_string_is_written_as_serde_json_writes_it() {
        let mut samples: Vec<String> = (0..=0x7f_u8).map(|b| char::from(b).to_string()).collect();
        samples.extend(
            ["", "plain", "é ü ß 日本 🦀", "quote \" backslash \\ slash /", "\u{7f}\u{80}\u{2028}"].map(String::from),
        );
        // An escape at every position of strings longer than a vector register, so
        // that the branch-free scan and the slow path meet at each offset.
        for at in 0..70 {
            for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}"] {
                samples.push(format!("{}{special}{}", "a".repeat(at), "b".repeat(70 - at)));
            }
        }
        for text in &samples {
            let expected = serde_json::to_string(text).expect("serialises");
            assert_eq!(written(|out| out.string(text)), expected, "{text:?}");
        }
    }

    #[test]
    fn lists_numbers_booleans_and_timestamps_are_written_as_serde_writes_them() {
        let list = ["a", "b\"c"];
        assert_eq!(written(|out| out.strings(&list)), serde_json::to_string(&list).expect("serialises"));
        assert_eq!(written(|out| out.strings::<&str>(&[])), "[]");
        for n in [0, -1, 42, i64::MIN, i64::MAX] {
            assert_eq!(written(|out| out.int(n)), n.to_string());
        }
        let nested = written(|out| {
            out.object(|o| {
                o.key("a").array(&[1, 2], |out, n| out.int(*n));
                o.key("b").object(|_| {});
                o.key("c").string("d");
            });
        });
        assert_eq!(nested, serde_json::json!({"a": [1, 2], "b": {}, "c": "d"}).to_string());
        assert_eq!(written(|out| out.bool(true)), "true");
        assert_eq!(written(|out| out.bool(false)), "false");

        #[derive(serde::Serialize)]
        struct T(#[serde(serialize_with = "super::super::timestamp")] chrono::DateTime<chrono::Utc>);
        let ordinary = chrono::Utc.with_ymd_and_hms(2026, 11, 29, 18, 1, 2).single().expect("valid date");
        let beyond_9999 = chrono::Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single().expect("valid date");
        for at in [ordinary, ordinary + chrono::Duration::microseconds(123_456), beyond_9999] {
            assert_eq!(written(|out| out.timestamp(at)), serde_json::to_string(&T(at)).expect("serialises"));
        }
    }
}
