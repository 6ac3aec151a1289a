//! A record's list of strings (`route_candidates`, `attempts`) as the bridge reads
//! it: the array's stored text when the hand-written parse read it, so a record
//! costs no allocation and a routing decision copies the array instead of
//! re-escaping each string (issue 15, item 5).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::json::push_json_str;

/// A list of strings of a [`super::RecordView`]. Compares, prints and serializes
/// as the list of its strings, however it was read.
#[derive(Clone, Default)]
pub struct StrList<'a>(List<'a>);

#[derive(Clone)]
enum List<'a> {
    /// A JSON array of strings exactly as stored (`["a","b"]`: no whitespace, no
    /// string holding a byte JSON must escape), with its number of strings.
    Raw { text: &'a str, len: usize },
    /// Read by serde_json.
    Parsed(Vec<Cow<'a, str>>),
}

impl Default for List<'_> {
    fn default() -> Self {
        List::Parsed(Vec::new())
    }
}

impl<'a> StrList<'a> {
    /// The stored array `text` of `len` strings. Only for text the hand-written
    /// parse checked: `[`, strings without `"`, `\\` or control bytes separated by
    /// `,`, `]`, nothing else; so its bytes are what serde_json writes for the list.
    pub(super) fn raw(text: &'a str, len: usize) -> StrList<'a> {
        StrList(List::Raw { text, len })
    }

    /// How many strings.
    pub fn len(&self) -> usize {
        match &self.0 {
            List::Raw { len, .. } => *len,
            List::Parsed(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The strings, in order.
    pub fn iter(&self) -> Iter<'_> {
        match &self.0 {
            // No string holds a `"`, so every `"` opens or closes one: the strings
            // are every second piece between quotes.
            List::Raw { text, .. } => Iter::Raw(text.split('"').skip(1).step_by(2)),
            List::Parsed(v) => Iter::Parsed(v.iter()),
        }
    }

    /// Appends the list as serde_json writes it: the stored bytes when there are
    /// some (they need no escape), else each string escaped.
    pub(crate) fn push_json(&self, out: &mut Vec<u8>) {
        match &self.0 {
            List::Raw { text, .. } => out.extend_from_slice(text.as_bytes()),
            List::Parsed(v) => {
                out.push(b'[');
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    push_json_str(out, s);
                }
                out.push(b']');
            }
        }
    }
}

/// The strings of a [`StrList`].
pub enum Iter<'l> {
    /// Pieces of the stored text.
    Raw(std::iter::StepBy<std::iter::Skip<std::str::Split<'l, char>>>),
    /// Strings serde_json read.
    Parsed(std::slice::Iter<'l, Cow<'l, str>>),
}

impl<'l> Iterator for Iter<'l> {
    type Item = &'l str;

    fn next(&mut self) -> Option<&'l str> {
        match self {
            Iter::Raw(pieces) => pieces.next(),
            Iter::Parsed(strings) => strings.next().map(|s| s.as_ref()),
        }
    }
}

impl fmt::Debug for StrList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for StrList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Serialize for StrList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for StrList<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // What the view read before there was a raw form: the same inputs accepted.
        Vec::<Cow<'a, str>>::deserialize(deserializer).map(|v| StrList(List::Parsed(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_lists_read_as_their_strings() {
        for (text, want) in [
            ("[]", &[][..]),
            (r#"[""]"#, &[""][..]),
            (r#"["a"]"#, &["a"][..]),
            (r#"[",",""]"#, &[",", ""][..]),
            (r#"["a,b","","c:d","é😀"]"#, &["a,b", "", "c:d", "é😀"][..]),
        ] {
            let raw = StrList::raw(text, want.len());
            assert_eq!(raw.iter().collect::<Vec<_>>(), want, "{text}");
            let parsed = StrList(List::Parsed(want.iter().map(|s| Cow::Borrowed(*s)).collect()));
            assert_eq!(raw, parsed);
            assert_eq!(format!("{raw:?}"), format!("{parsed:?}"));
            assert_eq!(serde_json::to_string(&raw).unwrap(), text);
            let mut out = Vec::new();
            raw.push_json(&mut out);
            assert_eq!(out, text.as_bytes());
            out.clear();
            parsed.push_json(&mut out);
            assert_eq!(out, text.as_bytes());
        }
    }
}
