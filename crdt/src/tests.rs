//! The CRDT laws, as properties: merge is commutative, associative and idempotent; deltas
//! applied in any order, any number of times, converge to the full-state result; counts
//! only grow within an epoch; the encoding round-trips.

use proptest::prelude::*;

use crate::{BudgetKey, Budgets, Limits, Measure, ReplicaId, Subject, WindowKind};

/// 2024-02-29T23:59:30Z: half a minute before a minute, a day and a month all end.
const NOW: i64 = 1_709_251_170;

fn keys() -> Vec<BudgetKey> {
    let mut keys = Vec::new();
    for subject in [Subject::key("k1"), Subject::key("k2"), Subject::tenant("k1")] {
        for kind in WindowKind::ALL {
            for now in [NOW, NOW + 60] {
                for measure in Measure::ALL {
                    keys.push(BudgetKey::at(subject.clone().unwrap(), kind, now).unwrap().with_measure(measure));
                }
            }
        }
    }
    keys
}

fn replica(i: u8) -> ReplicaId {
    ReplicaId::new(u64::from(i % 3), u16::from(i / 3 % 2), u32::from(i / 6))
}

/// Spend amounts: mostly small, sometimes near `u64::MAX` to reach saturation.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..1_000, 1 => (u64::MAX - 1_000)..=u64::MAX]
}

/// A state built by some replicas' adds: (replica, key index, amount).
fn state() -> impl Strategy<Value = Budgets> {
    proptest::collection::vec((0u8..12, any::<prop::sample::Index>(), amount()), 0..24).prop_map(|adds| {
        let keys = keys();
        let mut b = Budgets::new(Limits::default());
        for (r, k, n) in adds {
            b.add(replica(r), k.get(&keys), n).unwrap();
        }
        b
    })
}

fn join(a: &Budgets, b: &Budgets) -> Budgets {
    let mut out = a.clone();
    out.merge(b).unwrap();
    out
}

fn spent_all(b: &Budgets) -> Vec<u64> {
    keys().iter().map(|k| b.spent(k)).collect()
}

/// One step of a run of replicas: a replica adds to its own slot, or ships its delta.
#[derive(Debug, Clone)]
enum Op {
    Add {
        replica: u8,
        key: prop::sample::Index,
        n: u64,
    },
    Ship {
        replica: u8,
    },
    /// A replica merges a delta shipped earlier (gossip among the writers themselves).
    Deliver {
        to: u8,
        delta: prop::sample::Index,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, any::<prop::sample::Index>(), amount()).prop_map(|(replica, key, n)| Op::Add { replica, key, n }),
        2 => (0u8..4).prop_map(|replica| Op::Ship { replica }),
        1 => (0u8..4, any::<prop::sample::Index>()).prop_map(|(to, delta)| Op::Deliver { to, delta }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative(a in state(), b in state()) {
        prop_assert_eq!(join(&a, &b), join(&b, &a));
    }

    #[test]
    fn merge_is_associative(a in state(), b in state(), c in state()) {
        prop_assert_eq!(join(&join(&a, &b), &c), join(&a, &join(&b, &c)));
    }

    #[test]
    fn merge_is_idempotent(a in state(), b in state()) {
        prop_assert_eq!(join(&a, &a), a.clone());
        let ab = join(&a, &b);
        prop_assert_eq!(join(&ab, &b), ab.clone());
        prop_assert_eq!(join(&ab, &a), ab);
    }

    #[test]
    fn deltas_in_any_order_and_number_converge(
        ops in proptest::collection::vec(op(), 0..64),
        order in proptest::collection::vec((any::<u32>(), 1u8..4), 80),
    ) {
        let keys = keys();
        let mut replicas: Vec<Budgets> = (0..4).map(|_| Budgets::new(Limits::default())).collect();
        let mut deltas: Vec<Budgets> = Vec::new();
        for op in ops {
            match op {
                Op::Add { replica: r, key, n } => {
                    replicas[usize::from(r)].add(replica(r), key.get(&keys), n).unwrap();
                }
                Op::Ship { replica: r } => deltas.push(replicas[usize::from(r)].take_delta()),
                Op::Deliver { to, delta } if !deltas.is_empty() => {
                    let d = delta.get(&deltas).clone();
                    replicas[usize::from(to)].merge(&d).unwrap();
                }
                Op::Deliver { .. } => {}
            }
        }
        for r in &mut replicas {
            deltas.push(r.take_delta());
        }
        let full = replicas.iter().fold(Budgets::new(Limits::default()), |acc, r| join(&acc, r));

        // Shuffle by the random ranks and repeat each delta 1 to 3 times.
        let mut shuffled: Vec<(u32, usize, u8)> =
            deltas.iter().enumerate().map(|(i, _)| (order[i % order.len()].0, i, order[i % order.len()].1)).collect();
        shuffled.sort();
        let mut receiver = Budgets::new(Limits::default());
        let mut before = spent_all(&receiver);
        for (_, i, copies) in shuffled {
            for _ in 0..copies {
                receiver.merge(&deltas[i]).unwrap();
                let now = spent_all(&receiver);
                prop_assert!(now.iter().zip(&before).all(|(n, b)| n >= b), "a merge never lowers a count");
                before = now;
            }
        }
        prop_assert_eq!(&receiver, &full);
        // What every replica ever counted is in the full state, nowhere overcounted.
        for (i, k) in keys.iter().enumerate() {
            let own: u64 = (0u8..4).fold(0u64, |sum, r| sum.saturating_add(
                replicas[usize::from(r)].counter(k).map_or(0, |c| c.get(replica(r)))));
            prop_assert_eq!(full.spent(k), own, "key {}", i);
        }
    }

    #[test]
    fn counts_only_grow_within_an_epoch(
        steps in proptest::collection::vec((any::<bool>(), 0u8..12, any::<prop::sample::Index>(), amount(), state()), 0..32),
    ) {
        let keys = keys();
        let mut b = Budgets::new(Limits::default());
        let mut before = spent_all(&b);
        for (add, r, k, n, other) in steps {
            if add {
                let key = k.get(&keys);
                let old = b.spent(key);
                let new = b.add(replica(r), key, n).unwrap();
                prop_assert!(new >= old && new <= old.saturating_add(n), "{} + {} gave {}", old, n, new);
            } else {
                b.merge(&other).unwrap();
            }
            let now = spent_all(&b);
            prop_assert!(now.iter().zip(&before).all(|(n, b)| n >= b));
            before = now;
        }
    }

    #[test]
    fn bounded_merges_are_all_or_nothing(
        a in state(), b in state(), c in state(), keys_max in 0usize..20, slots_max in 0usize..6,
    ) {
        let limits = Limits { keys_max, slots_per_key_max: slots_max };
        // Build `a` under the limits through merges and adds (taking what fits), so its
        // bookkeeping is what a bounded replica's would be.
        let mut bounded = Budgets::new(limits);
        let _ = bounded.merge(&a);
        let _ = bounded.merge(&b.clone().take_delta());
        for (key, counter) in c.iter() {
            for (r, v) in counter.slots() {
                let _ = bounded.add(r, key, v);
            }
        }
        let fits = |m: &Budgets| m.len() <= keys_max && m.iter().all(|(_, c)| c.len() <= slots_max);
        prop_assert!(fits(&bounded));
        for other in [&a, &b, &c] {
            let before = bounded.clone();
            let unbounded = join(&join(&Budgets::new(Limits::default()), &before), other);
            match bounded.merge(other) {
                Ok(_) => {
                    prop_assert_eq!(&bounded, &unbounded);
                    prop_assert!(fits(&bounded));
                }
                Err(_) => {
                    prop_assert!(!fits(&unbounded), "refused a merge that fits");
                    prop_assert_eq!(&bounded, &before);
                }
            }
        }
    }

    #[test]
    fn encoding_round_trips(a in state()) {
        let bytes = a.encode();
        let back = Budgets::decode(&bytes, Limits::default()).unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn decode_of_damaged_encodings_never_panics(
        a in state(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = a.encode();
        for (at, byte) in damage {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        if let Ok(b) = Budgets::decode(&bytes, Limits::default()) {
            prop_assert_eq!(b.encode(), bytes, "one state, one encoding");
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(b) = Budgets::decode(&bytes, Limits::default()) {
            prop_assert_eq!(b.encode(), bytes, "one state, one encoding");
        }
    }
}
