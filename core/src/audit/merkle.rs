//! RFC 6962 (Certificate Transparency) Merkle tree hash, kept incrementally.
//!
//! `MTH({}) = SHA-256()`, `MTH({d}) = SHA-256(0x00 || d)`, and for `n > 1` with `k`
//! the largest power of two below `n`: `MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) ||
//! MTH(D[k:n]))`. [`Frontier`] holds the roots of the perfect subtrees the leaves so
//! far decompose into (one per set bit of the leaf count, largest first), so adding
//! a leaf costs O(log n) and the root is a right-to-left fold of the frontier — which
//! is exactly the RFC's split at the largest power of two.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash of an empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The right edge of a Merkle tree: enough to add leaves and compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Roots of perfect subtrees, largest first, with their heights.
    peaks: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Number of leaves added.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Adds one leaf (its data, not its hash).
    pub fn push(&mut self, leaf: &[u8]) {
        self.push_leaf_hash(leaf_hash(leaf));
    }

    /// Adds one leaf given its leaf hash.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        let mut height = 0u32;
        let mut hash = leaf;
        // Merging equal-height peaks is binary carry; at most 64 rounds for a u64 size.
        while let Some(&(h, left)) = self.peaks.last() {
            if h != height {
                break;
            }
            self.peaks.pop();
            hash = node_hash(&left, &hash);
            height += 1;
        }
        self.peaks.push((height, hash));
        self.size += 1;
        debug_assert_eq!(self.peaks.len() as u32, self.size.count_ones());
    }

    /// The RFC 6962 tree hash of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut iter = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The RFC 6962 tree hash of `leaves`, computed by the recursive definition. For tests
/// and small inputs; [`Frontier`] is the incremental form.
pub fn root_of<T: AsRef<[u8]>>(leaves: &[T]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaf_hash(leaves[0].as_ref()),
        n => {
            let k = if n.is_power_of_two() { n / 2 } else { 1 << (usize::BITS - 1 - n.leading_zeros()) };
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// Lower-case hex of a digest.
pub fn to_hex(hash: &Hash) -> String {
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(char::from(b"0123456789abcdef"[(b >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(b & 15) as usize]));
    }
    s
}

/// Parses 64 hex digits.
pub fn from_hex(text: &str) -> Option<Hash> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(data: &[u8]) -> Hash {
        Sha256::digest(data).into()
    }

    /// The eight leaves of the RFC 6962 reference test (certificate-transparency-go
    /// `merkle/testonly`), as bytes.
    fn rfc_leaves() -> Vec<Vec<u8>> {
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
            .iter()
            .map(|hex| (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect())
            .collect()
    }

    /// Published roots for the first 1..=8 of those leaves.
    const RFC_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn empty_tree_is_sha256_of_nothing() {
        assert_eq!(to_hex(&empty_root()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Frontier::new().root(), empty_root());
    }

    #[test]
    fn rfc6962_reference_roots() {
        let leaves = rfc_leaves();
        let mut f = Frontier::new();
        for (n, leaf) in leaves.iter().enumerate() {
            f.push(leaf);
            assert_eq!(to_hex(&f.root()), RFC_ROOTS[n], "incremental root of {} leaves", n + 1);
            assert_eq!(to_hex(&root_of(&leaves[..=n])), RFC_ROOTS[n], "recursive root of {} leaves", n + 1);
        }
    }

    #[test]
    fn one_to_eight_leaves_by_hand() {
        // Leaves "a".."h"; each root written out from the RFC's definition.
        let d: Vec<&[u8]> = vec![b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"];
        let l: Vec<Hash> = d.iter().map(|x| leaf_hash(x)).collect();
        let n = node_hash;
        let by_hand = [
            l[0],
            n(&l[0], &l[1]),
            n(&n(&l[0], &l[1]), &l[2]),
            n(&n(&l[0], &l[1]), &n(&l[2], &l[3])),
            n(&n(&n(&l[0], &l[1]), &n(&l[2], &l[3])), &l[4]),
            n(&n(&n(&l[0], &l[1]), &n(&l[2], &l[3])), &n(&l[4], &l[5])),
            n(&n(&n(&l[0], &l[1]), &n(&l[2], &l[3])), &n(&n(&l[4], &l[5]), &l[6])),
            n(&n(&n(&l[0], &l[1]), &n(&l[2], &l[3])), &n(&n(&l[4], &l[5]), &n(&l[6], &l[7]))),
        ];
        // The leaf hash itself is SHA-256(0x00 || data).
        assert_eq!(l[0], h(&[0, b'a']));
        let mut f = Frontier::new();
        for (i, leaf) in d.iter().enumerate() {
            f.push(leaf);
            assert_eq!(f.root(), by_hand[i], "{} leaves", i + 1);
            assert_eq!(f.size(), i as u64 + 1);
        }
    }

    #[test]
    fn incremental_matches_recursive_up_to_100() {
        let leaves: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut f = Frontier::new();
        for i in 0..leaves.len() {
            f.push(&leaves[i]);
            assert_eq!(f.root(), root_of(&leaves[..=i]), "{} leaves", i + 1);
        }
    }

    #[test]
    fn hex_round_trip_and_rejects() {
        let x = h(b"x");
        assert_eq!(from_hex(&to_hex(&x)), Some(x));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"A".repeat(64)), None);
    }
}
