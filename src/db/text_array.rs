//! `text[]` read without copying: the names borrow the row PostgreSQL sent.
//!
//! sqlx decodes a `text[]` into a `Vec<String>`: one allocation and one copy per
//! element, up to a hundred per page of articles. Borrowed, a page's text is
//! copied once, into the response (see `articles::ArticlePage`).

use sqlx::{
    Decode, Postgres, Type,
    error::BoxDynError,
    postgres::{PgTypeInfo, PgValueFormat, PgValueRef},
};

/// The elements of a one-dimensional `text[]` without NULLs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Texts<'r>(pub Vec<&'r str>);

/// `text`'s type id: the only element type this reads.
const TEXT_OID: u32 = 25;

impl Type<Postgres> for Texts<'_> {
    fn type_info() -> PgTypeInfo {
        <Vec<String> as Type<Postgres>>::type_info()
    }
}

impl<'r> Decode<'r, Postgres> for Texts<'r> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        if value.format() != PgValueFormat::Binary {
            return Err("a text[] in text format: only the binary format is read".into());
        }
        parse(value.as_bytes()?).map(Self)
    }
}

/// PostgreSQL's binary array format (`array_send`): the number of dimensions, a
/// has-NULLs flag and the element type; a length and a lower bound per
/// dimension; then each element as its length in bytes (-1 for NULL) and its
/// bytes. Every count is a big-endian 32-bit integer.
fn parse(bytes: &[u8]) -> Result<Vec<&str>, BoxDynError> {
    let mut rest = bytes;
    let dimensions = take_i32(&mut rest)?;
    let _has_nulls = take_i32(&mut rest)?;
    let element_type = take_i32(&mut rest)? as u32;
    if element_type != TEXT_OID {
        return Err(format!("an array of type {element_type}, expected text ({TEXT_OID})").into());
    }
    let len = match dimensions {
        0 => 0,
        1 => {
            let len = take_i32(&mut rest)?;
            let _lower_bound = take_i32(&mut rest)?;
            usize::try_from(len).map_err(|_| format!("a text[] of length {len}"))?
        }
        n => return Err(format!("a text[] of {n} dimensions, expected 1").into()),
    };
    // Each element takes at least its 4-byte length: a corrupt count cannot
    // reserve more than the bytes could hold.
    let mut texts = Vec::with_capacity(len.min(rest.len() / 4));
    for _ in 0..len {
        let size = take_i32(&mut rest)?;
        let size = match size {
            -1 => return Err("a NULL in a text[]".into()),
            size => usize::try_from(size).map_err(|_| format!("a text[] element of length {size}"))?,
        };
        let (text, tail) = rest.split_at_checked(size).ok_or("a text[] element past the end of the value")?;
        texts.push(std::str::from_utf8(text)?);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err("bytes after a text[]'s last element".into());
    }
    Ok(texts)
}

fn take_i32(rest: &mut &[u8]) -> Result<i32, BoxDynError> {
    let (head, tail) = rest.split_first_chunk::<4>().ok_or("a text[] cut short")?;
    *rest = tail;
    Ok(i32::from_be_bytes(*head))
}

#[cfg(test)]
mod tests {
    use super::{TEXT_OID, parse};

    /// `array_send`'s bytes for a one-dimensional array of `elements` (`None` is NULL).
    fn sent(elements: &[Option<&[u8]>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        let has_nulls = elements.iter().any(Option::is_none);
        for n in [1, i32::from(has_nulls), TEXT_OID as i32, elements.len() as i32, 1] {
            bytes.extend(n.to_be_bytes());
        }
        for element in elements {
            match element {
                Some(text) => {
                    bytes.extend((text.len() as i32).to_be_bytes());
                    bytes.extend(*text);
                }
                None => bytes.extend((-1i32).to_be_bytes()),
            }
        }
        bytes
    }

    #[test]
    fn the_elements_are_read_in_order_as_sent() {
        let names: [&[u8]; 4] = [b"rust", "caf\u{e9} \u{1f980}".as_bytes(), b"", b"with \"quotes\", {braces}"];
        let bytes = sent(&names.map(Some));
        let expected: Vec<&str> = names.iter().map(|n| std::str::from_utf8(n).expect("utf-8")).collect();
        assert_eq!(parse(&bytes).expect("parses"), expected);
    }

    #[test]
    fn an_empty_array_has_no_elements_with_or_without_a_dimension() {
        let bytes: Vec<u8> = [0, 0, TEXT_OID as i32].iter().flat_map(|n| n.to_be_bytes()).collect();
        assert_eq!(parse(&bytes).expect("parses"), Vec::<&str>::new());
        assert_eq!(parse(&sent(&[])).expect("parses"), Vec::<&str>::new());
    }

    #[test]
    fn nulls_bad_text_and_damaged_values_are_errors_not_panics() {
        let full = sent(&[Some(b"rust"), Some(b"web")]);
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = full.clone();
        longer.push(0);
        assert!(parse(&longer).is_err());
        assert!(parse(&sent(&[Some(b"rust"), None])).is_err());
        let mut negative = full.clone();
        negative[20..24].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(parse(&negative).is_err());
        assert!(parse(&sent(&[Some(b"\xff")])).is_err());

        let mut two_dimensions = full.clone();
        two_dimensions[3] = 2;
        assert!(parse(&two_dimensions).is_err());
        let mut integers = full.clone();
        integers[8..12].copy_from_slice(&23i32.to_be_bytes());
        assert!(parse(&integers).is_err());
        let mut huge = full;
        huge[12..16].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(parse(&huge).is_err());
    }
}
