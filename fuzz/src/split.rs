//! Ways to cut one byte stream into the pieces a socket might deliver.
//!
//! A stream decoder must not care where the network split its input, so the stream checks decode the same
//! bytes cut several ways and compare. The cuts are derived from the input itself (no global randomness),
//! so a crash replays exactly from its saved input.

/// A small deterministic generator (xorshift64*), seeded from the bytes it will cut.
pub struct Cuts {
    state: u64,
}

impl Cuts {
    pub fn seeded(bytes: &[u8], salt: u64) -> Self {
        // FNV-1a of the input; never zero, which xorshift cannot leave.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Cuts { state: h | 1 }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Cuts `bytes` into pieces of 0 to `max` bytes (empty pieces included: a transport may deliver one).
pub fn random_pieces(bytes: &[u8], salt: u64, max: usize) -> Vec<&[u8]> {
    let mut cuts = Cuts::seeded(bytes, salt);
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = cuts.below(max + 1).min(rest.len());
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// The cuts every stream check compares: whole, one byte at a time, and two pseudo-random patterns (one
/// of small pieces that land inside line ends and UTF-8 sequences, one of larger ones).
pub fn patterns(bytes: &[u8]) -> Vec<Vec<&[u8]>> {
    vec![vec![bytes], bytes.chunks(1).collect(), random_pieces(bytes, 1, 7), random_pieces(bytes, 2, 300)]
}
