//! A reading's id as the rule windows hold it.
//!
//! The gateway keeps each series' recent readings in memory as far back as
//! the rules reach, so a program hub holds hundreds of thousands of
//! [`crate::Point`]s, each citing its reading by id. The gateway's ids are
//! 32 lowercase hex digits (16 bytes of a digest); held as text behind a
//! shared pointer each cost a 48-byte allocation besides the point. Here
//! such an id is held as its 16 bytes, inline; any other id (a vendor's, a
//! test's) as text. Both read and compare as the text they stand for: the
//! order is the text's (lowercase hex sorts as its bytes), equality is the
//! text's (a 32-digit lowercase hex text is always held as bytes), and it
//! serializes as that text.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reading's id (see the module documentation).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReadingId(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// 32 lowercase hex digits, as their bytes.
    Hex([u8; 16]),
    /// Any other id.
    Text(Arc<str>),
}

impl ReadingId {
    /// The id `s`.
    pub fn new(s: &str) -> ReadingId {
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        let mut bytes = [0u8; 16];
        if s.len() == 32
            && s.bytes().all(|b| lower_hex(&b))
            && hex::decode_to_slice(s, &mut bytes).is_ok()
        {
            return ReadingId(Repr::Hex(bytes));
        }
        ReadingId(Repr::Text(s.into()))
    }

    /// Calls `f` with the id as text (written out on the stack when held
    /// as bytes).
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match &self.0 {
            Repr::Text(s) => f(s),
            Repr::Hex(bytes) => {
                let mut text = [0u8; 32];
                // 16 bytes always fit 32 digits, and hex digits are ASCII.
                let text = hex::encode_to_slice(bytes, &mut text)
                    .ok()
                    .and_then(|()| std::str::from_utf8(&text).ok())
                    .unwrap_or_default();
                f(text)
            }
        }
    }

    /// The order of this id's text against `other`.
    pub fn cmp_str(&self, other: &str) -> Ordering {
        self.with_str(|s| s.cmp(other))
    }
}

impl From<&str> for ReadingId {
    fn from(s: &str) -> ReadingId {
        ReadingId::new(s)
    }
}

impl From<String> for ReadingId {
    fn from(s: String) -> ReadingId {
        ReadingId::new(&s)
    }
}

impl PartialEq<str> for ReadingId {
    fn eq(&self, other: &str) -> bool {
        self.with_str(|s| s == other)
    }
}

impl Ord for ReadingId {
    fn cmp(&self, other: &ReadingId) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Hex(a), Repr::Hex(b)) => a.cmp(b),
            (Repr::Text(a), Repr::Text(b)) => a.cmp(b),
            _ => self.with_str(|a| other.cmp_str(a).reverse()),
        }
    }
}

impl PartialOrd for ReadingId {
    fn partial_cmp(&self, other: &ReadingId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ReadingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| f.write_str(s))
    }
}

impl fmt::Debug for ReadingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| fmt::Debug::fmt(s, f))
    }
}

impl Serialize for ReadingId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_str(|s| serializer.serialize_str(s))
    }
}

impl<'de> Deserialize<'de> for ReadingId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ReadingId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(ReadingId::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_gateway_id_is_held_as_bytes_and_reads_as_its_text() {
        let id = ReadingId::new(HEX);
        assert!(matches!(id.0, Repr::Hex(_)));
        assert_eq!(id.to_string(), HEX);
        assert_eq!(format!("{id:?}"), format!("{HEX:?}"));
        assert!(id == *HEX);
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{HEX}\""));
        let back: ReadingId = serde_json::from_str(&format!("\"{HEX}\"")).unwrap();
        assert_eq!(back, id);
    }

    #[test]
    fn other_ids_stay_text() {
        for s in [
            "fill-0",
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdeg",
            "é123456789abcdef0123456789abcde",
        ] {
            let id = ReadingId::new(s);
            assert!(matches!(id.0, Repr::Text(_)), "{s}");
            assert_eq!(id.to_string(), s);
            assert!(id == *s);
        }
    }

    #[test]
    fn ids_order_as_their_text() {
        let texts = [
            "",
            "0",
            "00000000000000000000000000000000",
            "0123456789ABCDEF0123456789ABCDEF",
            HEX,
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdf0",
            "fill-0",
            "ffffffffffffffffffffffffffffffff",
            "fffffffffffffffffffffffffffffffff",
        ];
        for a in texts {
            for b in texts {
                let (x, y) = (ReadingId::new(a), ReadingId::new(b));
                assert_eq!(x.cmp(&y), a.cmp(b), "{a} vs {b}");
                assert_eq!(x.cmp_str(b), a.cmp(b), "{a} vs {b}");
                assert_eq!(x == y, a == b);
            }
        }
    }
}
