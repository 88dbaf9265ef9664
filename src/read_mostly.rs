//! [`ReadMostly`]: a map that is filled once per key and then only read, by every request.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use arc_swap::ArcSwap;

/// A map read on every request and written once per key: metric handles by label set
/// (looking a metric up in the registry builds and hashes its labels on every call), SQL
/// written once per statement shape. Reads take no lock: a read-write lock's reader count
/// is a shared write that the worker threads fought over on every request. A new key
/// copies the map, so the keys must be few and bounded (platforms × verdicts, commands ×
/// outcomes, routes × methods, statement shapes × sizes).
#[derive(Debug)]
pub struct ReadMostly<K, V> {
    known: ArcSwap<HashMap<K, V>>,
}

impl<K, V> Default for ReadMostly<K, V> {
    fn default() -> Self {
        Self {
            known: ArcSwap::from_pointee(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> ReadMostly<K, V> {
    /// What `use_it` makes of the value of `key`, made by `make` the first time (`owned`
    /// makes the key to keep).
    pub fn with<Q, R>(
        &self,
        key: &Q,
        owned: impl FnOnce() -> K,
        make: impl FnOnce() -> V,
        use_it: impl FnOnce(&V) -> R,
    ) -> R
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(value) = self.known.load().get(key) {
            return use_it(value);
        }
        let value = make();
        let key = owned();
        self.known.rcu(|known| {
            let mut known = HashMap::clone(known);
            known.entry(key.clone()).or_insert_with(|| value.clone());
            known
        });
        use_it(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::ReadMostly;

    #[test]
    fn a_value_is_made_once_per_key() {
        let map = ReadMostly::<String, usize>::default();
        let mut made = 0;
        let mut seen = Vec::new();
        for key in ["a", "b", "a", "a", "b"] {
            let value = map.with(
                key,
                || key.to_string(),
                || {
                    made += 1;
                    made
                },
                |value| *value,
            );
            seen.push(value);
        }
        assert_eq!(made, 2);
        assert_eq!(seen, [1, 2, 1, 1, 2]);
    }
}
