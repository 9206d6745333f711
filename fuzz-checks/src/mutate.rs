//! A small deterministic mutator for the stable seed replay: byte flips, interesting bytes,
//! inserts, deletes, duplicated runs and splices between seeds, as libFuzzer's default
//! mutations do but without coverage feedback. Deterministic so that a failure in CI names an
//! input that reproduces on any machine.

/// xorshift64*: enough randomness for picking mutations, and reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Bytes that parsers of text protocols branch on.
const INTERESTING: &[u8] = b"\0\xff\x7f\x80\r\n \t:;,=\"'{}[]\\/%?&#.-0123456789";

/// Returns a mutant of `input` (with `other` as splice material), at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    // One to four stacked mutations, as libFuzzer stacks them.
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(out.len() + 1);
                let b = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.next_u64() as u8
                };
                out.insert(i, b);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(16)).min(out.len());
                out.drain(start..end);
            }
            4 if !out.is_empty() => {
                // Repeat a run: long lists, many headers, deep nesting.
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(32)).min(out.len());
                let run = out[start..end].to_vec();
                for _ in 0..1 + rng.below(64) {
                    out.splice(end..end, run.iter().copied());
                }
            }
            5 => out.truncate(rng.below(out.len() + 1)),
            6 if !other.is_empty() => {
                // Splice: this input's head, the other's tail.
                let cut = rng.below(out.len() + 1);
                let from = rng.below(other.len());
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            _ => {
                // A random byte anywhere, including outside ASCII.
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.next_u64() as u8);
            }
        }
    }
    out.truncate(max_len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutants() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(
                mutate(&mut a, b"GET / HTTP/1.1\r\n", b"Host: x\r\n", 64),
                mutate(&mut b, b"GET / HTTP/1.1\r\n", b"Host: x\r\n", 64)
            );
        }
    }

    #[test]
    fn mutants_respect_the_length_cap_and_differ_from_the_input() {
        let mut rng = Rng::new(1);
        let input = b"{\"host\":\"10.0.0.1\",\"port\":8080}";
        let mut changed = 0;
        for _ in 0..1000 {
            let m = mutate(&mut rng, input, b"[1,2,3]", 40);
            assert!(m.len() <= 40);
            changed += usize::from(m != input);
        }
        assert!(
            changed > 900,
            "only {changed} of 1000 mutants differ from the input"
        );
    }
}
