//! Turning generated tokens' bytes into streamed text.
//!
//! A token is a piece of bytes, not of text: a byte-level BPE token may end
//! in the middle of a multi-byte character, and a byte-fallback token is a
//! single byte. [`Utf8Stream`] holds bytes back until they form whole
//! characters, and replaces bytes that can never be valid UTF-8 with U+FFFD,
//! as `String::from_utf8_lossy` would for the whole output.
//!
//! [`Output`] adds the stop strings: text that might be the start of a stop
//! string is held back until it is clear it is not, and a stop string ends
//! the output before it (the stop string itself is not part of the text).

/// Bytes in, whole UTF-8 text out.
#[derive(Debug, Default)]
pub(crate) struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds `bytes`; appends to `out` the text they complete.
    pub fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(text) => {
                    out.push_str(text);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    // `valid_up_to` bytes are valid UTF-8 by definition; the
                    // lossy conversion copies them unchanged.
                    out.push_str(&String::from_utf8_lossy(&self.pending[start..valid]));
                    match e.error_len() {
                        // Invalid whatever follows: one replacement character.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid + bad;
                        }
                        // A character cut short: wait for its other bytes.
                        None => {
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
    }

    /// The end of the output: a character still cut short becomes U+FFFD.
    pub fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            self.pending.clear();
            out.push(char::REPLACEMENT_CHARACTER);
        }
    }
}

/// The text of one generation: decoded, checked against the stop strings,
/// and released for streaming only once no stop string can claim it.
#[derive(Debug)]
pub(crate) struct Output {
    utf8: Utf8Stream,
    stops: Vec<String>,
    /// Everything decoded so far (cut at a stop string once one is found).
    text: String,
    /// How much of `text` was released.
    released: usize,
    stopped: bool,
}

impl Output {
    pub fn new(stops: Vec<String>) -> Output {
        Output {
            utf8: Utf8Stream::default(),
            stops,
            text: String::new(),
            released: 0,
            stopped: false,
        }
    }

    /// Adds a token's bytes; returns the text that may be streamed now.
    /// After a stop string was found, nothing more is added.
    pub fn push(&mut self, bytes: &[u8]) -> &str {
        if self.stopped {
            return "";
        }
        let before = self.text.len();
        self.utf8.push(bytes, &mut self.text);
        if let Some(at) = self.find_stop(before) {
            self.text.truncate(at);
            self.stopped = true;
            return self.release(self.text.len());
        }
        let held = self.held_back();
        self.release(self.text.len() - held)
    }

    /// Whether a stop string ended the output.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Ends the output; returns the text not yet released.
    pub fn finish(&mut self) -> &str {
        if !self.stopped {
            self.utf8.finish(&mut self.text);
        }
        self.release(self.text.len())
    }

    /// The whole text (complete after [`Output::finish`]).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn release(&mut self, upto: usize) -> &str {
        let from = self.released;
        self.released = upto.max(from);
        &self.text[from..self.released]
    }

    /// The earliest stop string that ends in the text added since `before`.
    fn find_stop(&self, before: usize) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| {
                // A match may begin in older text, up to a stop's length back.
                let from = floor_char_boundary(&self.text, before.saturating_sub(stop.len()));
                self.text[from..].find(stop.as_str()).map(|i| from + i)
            })
            .min()
    }

    /// The length of the longest end of the text that begins a stop string.
    fn held_back(&self) -> usize {
        let unreleased = &self.text[self.released..];
        self.stops
            .iter()
            .map(|stop| {
                (1..stop.len().min(unreleased.len() + 1))
                    .rev()
                    .find(|&n| {
                        unreleased.is_char_boundary(unreleased.len() - n)
                            && stop.is_char_boundary(n)
                            && unreleased.ends_with(&stop[..n])
                    })
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }
}

/// The largest char boundary of `s` at or before `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: &[&[u8]]) -> (Vec<String>, String) {
        let mut u = Utf8Stream::default();
        let mut deltas = Vec::new();
        let mut all = String::new();
        for chunk in chunks {
            let mut out = String::new();
            u.push(chunk, &mut out);
            all.push_str(&out);
            deltas.push(out);
        }
        let mut out = String::new();
        u.finish(&mut out);
        all.push_str(&out);
        (deltas, all)
    }

    #[test]
    fn characters_split_across_tokens_are_held_until_whole() {
        let e_acute = "é".as_bytes(); // C3 A9
        let euro = "€".as_bytes(); // E2 82 AC
        let (deltas, all) =
            stream(&[b"caf", &e_acute[..1], &e_acute[1..], &euro[..2], &euro[2..], b"!"]);
        assert_eq!(deltas, ["caf", "", "é", "", "€", "!"]);
        assert_eq!(all, "café€!");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_like_lossy_decoding() {
        let cases: [&[&[u8]]; 4] = [
            &[b"\xff", b"a"],
            &[b"\xe2\x82", b"x"],
            &[b"ok\xc3"],
            &[b"\xf0\x9f", b"\x98", b"\x80", b"\x80\xc0\xaf"],
        ];
        for chunks in cases {
            let joined: Vec<u8> = chunks.concat();
            let (_, all) = stream(chunks);
            assert_eq!(all, String::from_utf8_lossy(&joined), "{joined:x?}");
        }
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let mut out = Output::new(stops.iter().map(|s| (*s).to_owned()).collect());
        let mut deltas: Vec<String> =
            pieces.iter().map(|p| out.push(p.as_bytes()).to_owned()).collect();
        deltas.push(out.finish().to_owned());
        (deltas, out.text().to_owned(), out.stopped())
    }

    #[test]
    fn stop_strings_end_the_text_before_them_and_are_never_streamed() {
        let (deltas, text, stopped) =
            run(&["\n\n", "END"], &["Hello", " wor", "ld E", "N", "D!", "x"]);
        assert_eq!(text, "Hello world ");
        assert!(stopped);
        assert_eq!(deltas.concat(), text);
        // "E" and "EN" were held back until "END" showed they were a stop.
        assert_eq!(deltas[2], "ld ");
        assert_eq!(deltas[3], "");
    }

    #[test]
    fn held_back_text_is_released_when_it_is_no_stop() {
        let (deltas, text, stopped) = run(&["STOP"], &["a S", "T", "x", "ST"]);
        assert!(!stopped);
        assert_eq!(text, "a STxST");
        assert_eq!(deltas, ["a ", "", "STx", "", "ST"]);
    }

    #[test]
    fn a_stop_inside_one_piece_or_across_many_is_found() {
        assert_eq!(run(&["<|"], &["abc<|im_end|>def"]).1, "abc");
        assert_eq!(run(&["ab"], &["a", "a", "b"]).1, "a");
        assert_eq!(run(&["é!"], &["caf", "é", "!"]).1, "caf");
        // The earliest of several stops wins.
        assert_eq!(run(&["cd", "b"], &["abcd"]).1, "a");
        // No stops: everything streams at once.
        assert_eq!(run(&[], &["a", "b"]).0, ["a", "b", ""]);
    }
}
