//! The kernel's two ways of writing a CPU set: the list format (`0-3,8,10-11`, in
//! `/sys/devices/system/cpu/online`, `cpuset.cpus`, `smp_affinity_list`,
//! `Cpus_allowed_list`, the `isolcpus=` boot flag) and the hex mask (`ff,ffffffff`, in
//! `rps_cpus` / `xps_cpus`: 32-bit groups, most significant first).

/// The highest CPU number accepted; the kernel's own `NR_CPUS` ceiling. A larger number
/// in a file makes the whole value unknown rather than a huge allocation.
pub const CPU_MAX: u32 = 8191;

/// Parses a CPU list (`0-3,8`, empty for none). Flags the boot command line may add
/// (`isolcpus=domain,managed_irq,2-5`, `nohz_full=` with `,`) are skipped; `None` on
/// anything else malformed. The result is sorted and free of duplicates.
pub fn parse_list(text: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in text.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // `isolcpus=` may carry flags before its list.
        if part.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
            continue;
        }
        // `0-7:2/4` (groups) is legal but rare; a stride makes the value unknown.
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if a > b || b > CPU_MAX {
            return None;
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Writes a CPU list in the kernel's form (`0-3,8`).
pub fn format_list(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end.saturating_add(1) {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

/// Parses a hex CPU mask (`00000000,0000000f`); `None` when malformed or beyond [`CPU_MAX`].
pub fn parse_mask(text: &str) -> Option<Vec<u32>> {
    let groups: Vec<&str> = text.trim().split(',').collect();
    let mut out = Vec::new();
    for (rank, group) in groups.iter().rev().enumerate() {
        let bits = u32::from_str_radix(group, 16).ok()?;
        for bit in 0..32u32 {
            if bits & (1 << bit) != 0 {
                let cpu = u32::try_from(rank).ok()?.checked_mul(32)?.checked_add(bit)?;
                if cpu > CPU_MAX {
                    return None;
                }
                out.push(cpu);
            }
        }
    }
    out.sort_unstable();
    Some(out)
}

/// Writes a hex CPU mask as `rps_cpus` takes it (`f`, `1,00000000`).
pub fn format_mask(cpus: &[u32]) -> String {
    let top = cpus.iter().copied().max().unwrap_or(0);
    let groups = (top / 32 + 1) as usize;
    let mut words = vec![0u32; groups];
    for &c in cpus {
        words[(c / 32) as usize] |= 1 << (c % 32);
    }
    let mut parts: Vec<String> = Vec::with_capacity(groups);
    for (i, w) in words.iter().rev().enumerate() {
        parts.push(if i == 0 { format!("{w:x}") } else { format!("{w:08x}") });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn lists_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(parse_list(""), Some(vec![]));
        assert_eq!(parse_list("domain,managed_irq,2-3"), Some(vec![2, 3]));
        assert_eq!(parse_list("3-1"), None);
        assert_eq!(parse_list("x"), Some(vec![]), "a bare flag is skipped");
        assert_eq!(parse_list("1-"), None);
        assert_eq!(parse_list(&format!("{}", CPU_MAX + 1)), None, "one past the ceiling");
        assert_eq!(parse_list(&format!("{CPU_MAX}")), Some(vec![CPU_MAX]), "the ceiling itself");
    }

    #[test]
    fn masks_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_mask("0"), Some(vec![]));
        assert_eq!(parse_mask("f\n"), Some(vec![0, 1, 2, 3]));
        assert_eq!(parse_mask("00000001,00000002"), Some(vec![1, 32]));
        assert_eq!(parse_mask("zz"), None);
        assert_eq!(format_mask(&[1, 32]), "1,00000002");
        assert_eq!(format_mask(&[]), "0");
    }

    proptest! {
        #[test]
        fn list_round_trips(cpus in proptest::collection::btree_set(0u32..300, 0..40)) {
            let cpus: Vec<u32> = cpus.into_iter().collect();
            prop_assert_eq!(parse_list(&format_list(&cpus)), Some(cpus));
        }

        #[test]
        fn mask_round_trips(cpus in proptest::collection::btree_set(0u32..300, 0..40)) {
            let cpus: Vec<u32> = cpus.into_iter().collect();
            prop_assert_eq!(parse_mask(&format_mask(&cpus)), Some(cpus));
        }
    }
}
