//! Token counting used for every provider's usage and budgets, so figures compare.
//!
//! A documented approximation of BPE tokenizers for English text: each run of letters counts
//! one token per started 6 characters, each run of digits one per started 3 digits, and every
//! other visible character one token. Whitespace is free. It slightly over-counts typical GPT
//! tokenization, which is the safe side for budgets.

/// Approximate token count of `text`.
pub fn count_tokens(text: &str) -> u64 {
    let mut n = 0u64;
    let mut letters = 0u32;
    let mut digits = 0u32;
    let flush = |n: &mut u64, letters: &mut u32, digits: &mut u32| {
        *n += (*letters as u64).div_ceil(6) + (*digits as u64).div_ceil(3);
        *letters = 0;
        *digits = 0;
    };
    for c in text.chars() {
        if c.is_alphabetic() {
            if digits > 0 {
                flush(&mut n, &mut letters, &mut digits);
            }
            letters += 1;
        } else if c.is_ascii_digit() {
            if letters > 0 {
                flush(&mut n, &mut letters, &mut digits);
            }
            digits += 1;
        } else {
            flush(&mut n, &mut letters, &mut digits);
            if !c.is_whitespace() {
                n += 1;
            }
        }
    }
    flush(&mut n, &mut letters, &mut digits);
    n
}

/// Tokens of a chat request: the messages plus a small per-message overhead, as OpenAI counts.
pub fn count_request(req: &super::ChatRequest) -> u64 {
    req.messages.iter().map(|m| count_tokens(&m.content) + MESSAGE_OVERHEAD).sum::<u64>() + REQUEST_OVERHEAD
}

/// Tokens added per chat message.
pub const MESSAGE_OVERHEAD: u64 = 4;
/// Tokens added per request.
pub const REQUEST_OVERHEAD: u64 = 3;

/// `count_request`, reusing the count recorded when the prompt was written when there is one.
pub fn prompt_tokens(req: &super::ChatRequest) -> u64 {
    if req.meta.prompt_tokens > 0 { req.meta.prompt_tokens } else { count_request(req) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("   "), 0);
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens("internationalization"), 4);
        assert_eq!(count_tokens("12345"), 2);
        assert_eq!(count_tokens("Hi, there!"), 4);
        assert_eq!(count_tokens("café"), 1);
    }
}
