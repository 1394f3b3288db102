//! Byte-level BPE built from a GGUF file's vocabulary (`tokenizer.ggml.tokens`) and merges
//! (`tokenizer.ggml.merges`), as GPT-2 and SmolLM2 define it:
//!
//! 1. control tokens (`<|im_start|>`, ...) are matched in the text before anything else;
//! 2. with `split_digits`, every digit becomes its own piece (SmolLM2's `Digits` step);
//! 3. GPT-2's pattern splits the rest into words, keeping a leading space with the word;
//! 4. each piece's UTF-8 bytes are written with GPT-2's byte-to-unicode alphabet and merged by
//!    rank.
//!
//! No prefix space is added. Decoding maps the alphabet back to bytes.

use std::collections::HashMap;

use regex::Regex;

/// A tokenizer that cannot be built from the given vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    /// Not one byte of GPT-2's alphabet has a token.
    #[error("the vocabulary has no byte tokens: not a byte-level BPE vocabulary")]
    NoByteTokens,
    /// A merge line is not `left right`.
    #[error("merge {index} ({line:?}) is not two tokens separated by a space")]
    BadMerge {
        /// Position in the list.
        index: usize,
        /// The line.
        line: String,
    },
    /// The vocabulary is empty or too large for 32-bit ids.
    #[error("the vocabulary has {0} tokens; expected 1 to 4,294,967,295")]
    BadSize(usize),
}

/// GPT-2's pre-tokenizer pattern without its `\s+(?!\S)` look-ahead, which `regex` cannot
/// express; [`Tokenizer::pieces`] applies that rule by hand.
const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

/// A byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    /// The id of each byte's single-character token. Some vocabularies leave out bytes that
    /// never occur in UTF-8 text (0xc0, 0xf5..) and a few control characters; those bytes are
    /// dropped when encoding, as the reference tokenizer (no unknown token) does.
    byte_ids: [Option<u32>; 256],
    /// Merge rank and result, by the ids of the pair.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Control tokens, longest first, so a longer one wins where two start at the same place.
    specials: Vec<(String, u32)>,
    is_special: Vec<bool>,
    /// Byte of each character of GPT-2's alphabet (indexed by code point, < 324).
    char_to_byte: Vec<Option<u8>>,
    split_digits: bool,
    pattern: Regex,
}

impl Tokenizer {
    /// Builds a tokenizer from the vocabulary (index = id), the merges (`"left right"`, in rank
    /// order), the ids of the control tokens, and whether digits are split one by one.
    pub fn new(
        tokens: Vec<String>,
        merges: &[String],
        special_ids: &[u32],
        split_digits: bool,
    ) -> Result<Self, TokenizerError> {
        if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
            return Err(TokenizerError::BadSize(tokens.len()));
        }
        let index: HashMap<&str, u32> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
        let alphabet = byte_alphabet();
        let mut byte_ids = [None; 256];
        let mut buf = [0u8; 4];
        for (b, c) in alphabet.iter().enumerate() {
            byte_ids[b] = index.get(&*c.encode_utf8(&mut buf)).copied();
        }
        if byte_ids.iter().all(Option::is_none) {
            return Err(TokenizerError::NoByteTokens);
        }
        let mut char_to_byte = vec![None; 324];
        for (b, c) in alphabet.iter().enumerate() {
            char_to_byte[*c as usize] = Some(b as u8);
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, line) in merges.iter().enumerate() {
            let (l, r) = line
                .split_once(' ')
                .filter(|(l, r)| !l.is_empty() && !r.is_empty())
                .ok_or_else(|| TokenizerError::BadMerge { index: rank, line: line.clone() })?;
            // A merge whose parts or result are not in the vocabulary can never apply; the
            // reference implementation skips it the same way.
            let (Some(&a), Some(&b), Some(&m)) = (index.get(l), index.get(r), index.get(format!("{l}{r}").as_str()))
            else {
                continue;
            };
            merge_map.entry((a, b)).or_insert((rank as u32, m));
        }
        let mut is_special = vec![false; tokens.len()];
        let mut specials = Vec::new();
        for &id in special_ids {
            if let Some(t) = tokens.get(id as usize).filter(|t| !t.is_empty()) {
                is_special[id as usize] = true;
                specials.push((t.clone(), id));
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        Ok(Tokenizer {
            byte_ids,
            merges: merge_map,
            specials,
            is_special,
            char_to_byte,
            split_digits,
            pattern: Regex::new(PATTERN).expect("the pre-tokenizer pattern is valid"),
            tokens,
        })
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token written exactly as in the vocabulary (`"<|im_end|>"`, `"Ġhello"`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == token).map(|i| i as u32)
    }

    /// The vocabulary entry of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// True for control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
    pub fn is_special(&self, id: u32) -> bool {
        self.is_special.get(id as usize).copied().unwrap_or(false)
    }

    /// Token ids of `text`; control tokens written in the text become their ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut rest = text;
        while !rest.is_empty() {
            match self.next_special(rest) {
                Some((at, len, id)) => {
                    self.encode_plain(&rest[..at], &mut out);
                    out.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_plain(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    /// Number of tokens of `text` (what usage reports).
    pub fn count(&self, text: &str) -> usize {
        self.encode(text).len()
    }

    /// The text of `ids`. Control tokens are left out unless `keep_special`; byte sequences
    /// that are not UTF-8 (a reply cut inside a character) become U+FFFD.
    pub fn decode(&self, ids: &[u32], keep_special: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let Some(t) = self.tokens.get(id as usize) else { continue };
            if self.is_special(id) {
                if keep_special {
                    bytes.extend_from_slice(t.as_bytes());
                }
                continue;
            }
            let mut buf = [0u8; 4];
            for c in t.chars() {
                match self.char_to_byte.get(c as usize).copied().flatten() {
                    Some(b) => bytes.push(b),
                    None => bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The earliest control token in `s`: (byte offset, length, id).
    fn next_special(&self, s: &str) -> Option<(usize, usize, u32)> {
        if self.specials.is_empty() {
            return None;
        }
        let firsts: Vec<u8> = self.specials.iter().map(|(t, _)| t.as_bytes()[0]).collect();
        let bytes = s.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if !firsts.contains(b) {
                continue;
            }
            for (t, id) in &self.specials {
                if bytes[i..].starts_with(t.as_bytes()) {
                    return Some((i, t.len(), *id));
                }
            }
        }
        None
    }

    fn encode_plain(&self, text: &str, out: &mut Vec<u32>) {
        for piece in self.pieces(text) {
            self.bpe(piece, out);
        }
    }

    /// Splits text without control tokens into the pieces BPE runs on.
    pub fn pieces<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut out = Vec::new();
        if !self.split_digits {
            self.split_words(text, &mut out);
            return out;
        }
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                self.split_words(&text[start..i], &mut out);
                out.push(&text[i..i + c.len_utf8()]);
                start = i + c.len_utf8();
            }
        }
        self.split_words(&text[start..], &mut out);
        out
    }

    /// GPT-2's pattern, with `\s+(?!\S)` applied by hand: a run of whitespace followed by a
    /// non-space keeps its last character for the next piece (so " word" stays together).
    fn split_words<'a>(&self, text: &'a str, out: &mut Vec<&'a str>) {
        let mut at = 0;
        while at < text.len() {
            let Some(m) = self.pattern.find_at(text, at) else { break };
            let (s, mut e) = (m.start(), m.end());
            let piece = &text[s..e];
            if e < text.len() && piece.chars().all(char::is_whitespace) {
                let last = piece.chars().next_back().map_or(0, char::len_utf8);
                if e - s > last {
                    e -= last;
                }
            }
            out.push(&text[s..e]);
            at = e;
        }
    }

    /// Merges one piece's bytes by rank, GPT-2 style: the best-ranked pair everywhere, then again.
    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<u32> = piece.bytes().filter_map(|b| self.byte_ids[b as usize]).collect();
        while syms.len() > 1 {
            let best = syms
                .windows(2)
                .filter_map(|w| self.merges.get(&(w[0], w[1])).map(|&(rank, m)| (rank, w[0], w[1], m)))
                .min_by_key(|x| x.0);
            let Some((_, a, b, merged)) = best else { break };
            let mut next = Vec::with_capacity(syms.len());
            let mut i = 0;
            while i < syms.len() {
                if i + 1 < syms.len() && syms[i] == a && syms[i + 1] == b {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(syms[i]);
                    i += 1;
                }
            }
            syms = next;
        }
        out.extend_from_slice(&syms);
    }
}

/// GPT-2's byte-to-unicode alphabet: printable bytes stand for themselves, the others
/// (controls, space, 0x7f-0xa0, 0xad) map to U+0100 onwards, in byte order.
pub fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(code).unwrap_or('\u{fffd}');
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny vocabulary: the 256 byte characters, three control tokens, and a few merges.
    fn tiny() -> Tokenizer {
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
        tokens.extend(byte_alphabet().iter().map(|c| c.to_string()));
        let merges: Vec<String> = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor ld", "l d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in &merges {
            let (l, r) = m.split_once(' ').unwrap();
            let t = format!("{l}{r}");
            if !tokens.contains(&t) {
                tokens.push(t);
            }
        }
        Tokenizer::new(tokens, &merges, &[0, 1, 2], true).unwrap()
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b'a' as usize], 'a');
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'\t' as usize], 'ĉ');
        assert_eq!(a[0], 'Ā');
        assert_eq!(a[0xad], 'Ń');
        assert_eq!(a[0xe9], 'é');
        let mut seen: Vec<char> = a.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256, "one character per byte");
    }

    #[test]
    fn pieces_follow_gpt2_with_single_digits() {
        let t = tiny();
        assert_eq!(t.pieces("Hello world"), ["Hello", " world"]);
        assert_eq!(t.pieces("don't 2024's"), ["don", "'t", " ", "2", "0", "2", "4", "'s"]);
        assert_eq!(t.pieces("  leading\n\n\ttab end  "), [" ", " leading", "\n\n", "\t", "tab", " end", "  "]);
        assert_eq!(t.pieces("a,   b!?"), ["a", ",", "  ", " b", "!?"]);
        assert_eq!(t.pieces("naïve façade"), ["naïve", " façade"]);
    }

    #[test]
    fn merges_apply_by_rank_and_specials_come_first() {
        let t = tiny();
        let id = |s: &str| t.token_id(s).unwrap();
        assert_eq!(t.encode("hello world"), [id("hello"), id("Ġworld")]);
        assert_eq!(t.encode("<|im_start|>hello<|im_end|>"), [1, id("hello"), 2]);
        // An unknown word falls back to byte tokens.
        assert_eq!(t.encode("é"), [id("Ã"), id("©")]);
    }

    #[test]
    fn bytes_missing_from_the_vocabulary_are_dropped() {
        // SmolLM2 has no token for 0x04 ('Ą'), among others; the reference tokenizer skips such
        // bytes ("a\x04b" gives the ids of "a" and "b").
        let tokens: Vec<String> = byte_alphabet().iter().filter(|c| **c != 'Ą').map(|c| c.to_string()).collect();
        let t = Tokenizer::new(tokens, &[], &[], false).unwrap();
        assert_eq!(t.encode("a\u{4}b"), [t.token_id("a").unwrap(), t.token_id("b").unwrap()]);
        assert_eq!(t.decode(&t.encode("a\u{4}b"), false), "ab");
    }

    #[test]
    fn decode_round_trips() {
        let t = tiny();
        for s in ["hello world", "Café 12  x\n\n", "🎭 <|im_end|> tail", ""] {
            let ids = t.encode(s);
            assert_eq!(t.decode(&ids, true), s);
            assert_eq!(t.encode(&t.decode(&ids, true)), ids);
        }
        assert_eq!(t.decode(&t.encode("<|im_start|>hi"), false), "hi");
    }

    #[test]
    fn bad_vocabularies_are_errors() {
        assert_eq!(Tokenizer::new(vec![], &[], &[], false).unwrap_err(), TokenizerError::BadSize(0));
        let err = Tokenizer::new(vec!["<s>".into()], &[], &[], false).unwrap_err();
        assert_eq!(err, TokenizerError::NoByteTokens);
        let toks: Vec<String> = byte_alphabet().iter().map(|c| c.to_string()).collect();
        let err = Tokenizer::new(toks, &["nospace".into()], &[], false).unwrap_err();
        assert!(err.to_string().contains("two tokens"), "{err}");
    }
}
