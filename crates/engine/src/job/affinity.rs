//! `affinity = "{{ … }}"` on a step: calls whose key renders the same go to
//! the same endpoint of the provider's pool — rendezvous hashing, so each key
//! has its own order of the endpoints, the first being its home, and a
//! changed pool moves only the keys of the endpoints that came or went.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The hash of a rendered affinity key.
pub(crate) fn key(rendered: &str) -> u64 {
    xxh3_64_with_seed(rendered.as_bytes(), 0x5eed)
}

/// The pool's endpoints (by index) in the order `key` prefers them.
pub(crate) fn order<'a>(key: u64, urls: impl Iterator<Item = &'a str>) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = urls
        .enumerate()
        .map(|(i, url)| (xxh3_64_with_seed(url.as_bytes(), key), i))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_home_and_a_removed_host_moves_only_its_own_keys() {
        let three = ["http://gpu1", "http://gpu2", "http://gpu3"];
        let two = ["http://gpu1", "http://gpu2"];
        let mut homes = [0usize; 3];
        for k in 0..300 {
            let k = key(&format!("file-{k}.wav"));
            let home = order(k, three.iter().copied())[0];
            assert_eq!(home, order(k, three.iter().copied())[0], "stable");
            homes[home] += 1;
            if home < 2 {
                assert_eq!(order(k, two.iter().copied())[0], home, "unmoved");
            }
        }
        // Spread over the pool.
        assert!(homes.iter().all(|&n| n > 60), "{homes:?}");
    }
}
