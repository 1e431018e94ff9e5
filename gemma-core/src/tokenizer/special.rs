//! Whole-token matching of control and user-defined tokens before the merge step.
//!
//! llama.cpp cuts every special token out of the text, longest token first; Hugging Face
//! matches added tokens leftmost-longest. The two agree whenever no special token overlaps
//! another one partially (true for the Gemma 3 vocabulary: the only overlaps are runs of one
//! repeated character such as `\n\n` / `\n\n\n`, where both give the same cut). A byte trie
//! scanned leftmost-longest does this in one pass: at most `max token length` steps per
//! position, and only at bytes that can start a special token.

/// One piece of the input: plain text for the merge step, or a whole special token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    /// Text between special tokens (never empty).
    Text(&'t str),
    /// A special token matched whole.
    Token(u32),
}

const NO_TOKEN: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    /// Children sorted by byte.
    edges: Vec<(u8, u32)>,
    /// Token ending here, or `NO_TOKEN`.
    token: u32,
    /// Whether that token is matched even when special-token parsing is off (user-defined).
    always: bool,
}

/// Byte trie of the special tokens.
#[derive(Debug, Clone)]
pub(crate) struct SpecialMatcher {
    nodes: Vec<Node>,
    /// Bytes that start some special token (a cheap filter before walking the trie).
    starts: [bool; 256],
}

impl SpecialMatcher {
    /// Builds the trie from `(id, text, always)`: `always` for user-defined tokens, which are
    /// matched even when special parsing is off; control and unknown tokens are matched only
    /// when it is on. Empty texts are ignored.
    pub(crate) fn new<'a>(tokens: impl Iterator<Item = (u32, &'a [u8], bool)>) -> Self {
        let mut nodes = vec![Node {
            edges: Vec::new(),
            token: NO_TOKEN,
            always: false,
        }];
        let mut starts = [false; 256];
        for (id, text, always) in tokens {
            let Some(&first) = text.first() else { continue };
            starts[first as usize] = true;
            let mut node = 0usize;
            for &byte in text {
                node = match nodes[node].edges.binary_search_by_key(&byte, |e| e.0) {
                    Ok(i) => nodes[node].edges[i].1 as usize,
                    Err(i) => {
                        let child = nodes.len();
                        nodes.push(Node {
                            edges: Vec::new(),
                            token: NO_TOKEN,
                            always: false,
                        });
                        nodes[node].edges.insert(i, (byte, child as u32));
                        child
                    }
                };
            }
            // Last id wins for duplicate texts, as in the text -> id lookup.
            nodes[node].token = id;
            nodes[node].always = always;
        }
        Self { nodes, starts }
    }

    /// Splits `text` into plain-text fragments and whole special tokens.
    pub(crate) fn split<'t>(&'t self, text: &'t str, parse_special: bool) -> Fragments<'t> {
        Fragments {
            matcher: self,
            text,
            pos: 0,
            text_start: 0,
            pending: None,
            parse_special,
        }
    }

    /// The longest special token starting at `bytes[0]`: `(id, length)`.
    #[inline]
    fn longest_at(&self, bytes: &[u8], parse_special: bool) -> Option<(u32, usize)> {
        let mut node = 0usize;
        let mut best = None;
        for (depth, &byte) in bytes.iter().enumerate() {
            let edges = &self.nodes[node].edges;
            match edges.binary_search_by_key(&byte, |e| e.0) {
                Ok(i) => node = edges[i].1 as usize,
                Err(_) => break,
            }
            let n = &self.nodes[node];
            if n.token != NO_TOKEN && (parse_special || n.always) {
                best = Some((n.token, depth + 1));
            }
        }
        best
    }
}

/// Iterator over the fragments of a text; see [`SpecialMatcher::split`].
pub(crate) struct Fragments<'t> {
    matcher: &'t SpecialMatcher,
    text: &'t str,
    /// Next byte to examine.
    pos: usize,
    /// Start of the plain text not yet returned.
    text_start: usize,
    /// A token found right after a returned text fragment.
    pending: Option<u32>,
    parse_special: bool,
}

impl<'t> Iterator for Fragments<'t> {
    type Item = Fragment<'t>;

    fn next(&mut self) -> Option<Fragment<'t>> {
        if let Some(id) = self.pending.take() {
            return Some(Fragment::Token(id));
        }
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            if !self.matcher.starts[bytes[self.pos] as usize] {
                self.pos += 1;
                continue;
            }
            match self
                .matcher
                .longest_at(&bytes[self.pos..], self.parse_special)
            {
                Some((id, len)) => {
                    // Special tokens are valid UTF-8 starting with a lead byte, so both
                    // `pos` and `pos + len` are char boundaries.
                    let before = &self.text[self.text_start..self.pos];
                    self.pos += len;
                    self.text_start = self.pos;
                    if before.is_empty() {
                        return Some(Fragment::Token(id));
                    }
                    self.pending = Some(id);
                    return Some(Fragment::Text(before));
                }
                None => self.pos += 1,
            }
        }
        if self.text_start < bytes.len() {
            let rest = &self.text[self.text_start..];
            self.text_start = bytes.len();
            return Some(Fragment::Text(rest));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> SpecialMatcher {
        let tokens: [(u32, &[u8], bool); 5] = [
            (1, b"<s>", false),
            (2, b"\n", true),
            (3, b"\n\n", true),
            (4, b"<s>x", true),
            (5, b"  ", true),
        ];
        SpecialMatcher::new(tokens.into_iter())
    }

    #[test]
    fn leftmost_longest_with_and_without_special_parsing() {
        let m = matcher();
        let got: Vec<_> = m.split("a<s>b\n\n\nc<s>xd", true).collect();
        use Fragment::*;
        assert_eq!(
            got,
            vec![
                Text("a"),
                Token(1),
                Text("b"),
                Token(3),
                Token(2),
                Text("c"),
                Token(4),
                Text("d")
            ]
        );
        let got: Vec<_> = m.split("a<s>b   ", false).collect();
        assert_eq!(got, vec![Text("a<s>b"), Token(5), Text(" ")]);
        assert_eq!(m.split("", true).count(), 0);
    }
}
