//! Limits held by several processes together: the arithmetic on the small
//! state a shared store keeps per provider. Pure, with the store's clock
//! passed in (microseconds), so every process computes with the same clock.
//!
//! **Rates** (rps, rpm, tpm) are shared by dividing the provider's sending
//! time into *slices*: a process claims the next free stretch of time (a
//! quarter of a second, or as long as one request needs) and, inside it,
//! sends with its own limiter at the provider's full rates; no other process
//! sends in that stretch. As long as each process keeps its requests'
//! spacing inside its slice ([`crate::Windows::fits_before`]), the
//! provider sees one limiter's schedule, whatever the number of processes,
//! and the store is asked once per slice, not once per request. A slice
//! handed out but not used (the process stopped) is given back if nobody
//! claimed after it.
//!
//! **Pauses** (`retry-after`) and **announced limits** (`x-ratelimit-limit-*`)
//! seen by one process are published here and taken up by the others at their
//! next claim. **Breakers**: an endpoint one process found failing is
//! avoided by the others until its cooldown ends.
//!
//! **Concurrency** is divided into leased *shares*: each process asks for
//! what it can use (its calls in flight and waiting); it gets what the others
//! do not hold, and no more than a fair share while others want more. A
//! process's share counts as held until its calls have drained below it, so
//! the sum in flight never exceeds the limit; a share expires when its
//! process stops renewing it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// A provider's shared state (one value per provider in the store).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedLimitState {
    /// Sending time up to here has been handed out (store clock, µs).
    #[serde(default)]
    pub claimed_until: i64,
    /// Nobody sends before this (a provider's `retry-after`), µs.
    #[serde(default)]
    pub paused_until: i64,
    /// Requests/minute the provider announced (0: none).
    #[serde(default)]
    pub learned_rpm: u64,
    /// Tokens/minute the provider announced (0: none).
    #[serde(default)]
    pub learned_tpm: u64,
    /// Endpoints (base URLs) to avoid until the given time, µs.
    #[serde(default)]
    pub open_until: BTreeMap<String, i64>,
    /// Concurrency shares by process.
    #[serde(default)]
    pub shares: BTreeMap<String, Share>,
}

/// One process's share of a provider's concurrency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Places counted as taken by this process: its grant, or more while
    /// calls started under an earlier, larger grant are still in flight.
    pub held: u64,
    /// Places it asked for.
    pub wanted: u64,
    /// Forgotten after this (µs): the process stopped renewing.
    pub expires: i64,
}

/// The answer to a claim of sending time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceGrant {
    /// The caller owns `[start, end)` (µs).
    Slice {
        /// First instant of the slice.
        start: i64,
        /// End of the slice (exclusive).
        end: i64,
    },
    /// Too much time is handed out already; claim again at `at` (µs).
    Later {
        /// When to claim again.
        at: i64,
    },
}

impl SharedLimitState {
    /// Claims the next `len` µs of sending time at `now`. Time is handed out
    /// at most `horizon` µs ahead of `now`, so a process that claims and dies
    /// holds the others back by no more than that.
    pub fn claim_slice(&mut self, now: i64, len: i64, horizon: i64) -> SliceGrant {
        let start = self.claimed_until.max(now).max(self.paused_until);
        if start - now > horizon {
            return SliceGrant::Later {
                at: start - horizon,
            };
        }
        let end = start + len.max(1);
        self.claimed_until = end;
        SliceGrant::Slice { start, end }
    }

    /// Gives back the unused rest `[from, end)` of a slice: possible only if
    /// nobody claimed after it, and never before `now`.
    pub fn give_back(&mut self, from: i64, end: i64, now: i64) {
        if self.claimed_until == end {
            self.claimed_until = from.max(now).min(end);
        }
    }

    /// Holds everyone back until `until` (µs); a later pause extends an
    /// earlier one, never shortens it.
    pub fn pause(&mut self, until: i64) {
        self.paused_until = self.paused_until.max(until);
    }

    /// Records an endpoint to avoid until `until` (µs), and forgets endpoints
    /// whose time has passed.
    pub fn open(&mut self, endpoint: &str, until: i64, now: i64) {
        self.open_until.retain(|_, t| *t > now);
        let t = self.open_until.entry(endpoint.to_owned()).or_insert(0);
        *t = (*t).max(until);
    }

    /// Updates `process`'s share of a concurrency limit `cap` at `now` and
    /// returns how many calls it may have in flight. `wanted`: calls it has
    /// in flight and waiting; `in_flight`: calls it has in flight now. The
    /// share is kept for `ttl` µs unless renewed.
    pub fn grant(
        &mut self,
        process: &str,
        wanted: u64,
        in_flight: u64,
        cap: u64,
        now: i64,
        ttl: i64,
    ) -> u64 {
        self.shares.retain(|p, s| s.expires > now || p == process);
        let others = self.shares.iter().filter(|(p, _)| p.as_str() != process);
        let (others_held, contended, askers) =
            others.fold((0u64, false, 0u64), |(held, contended, askers), (_, s)| {
                (
                    held.saturating_add(s.held),
                    contended || s.wanted > s.held,
                    askers + u64::from(s.wanted > 0),
                )
            });
        let free = cap.saturating_sub(others_held);
        let fair = cap.div_ceil(askers + 1).max(1);
        let ceiling = if contended { fair } else { cap };
        let granted = wanted.min(free).min(ceiling);
        self.shares.insert(
            process.to_owned(),
            Share {
                held: granted.max(in_flight.min(cap)),
                wanted,
                expires: now + ttl,
            },
        );
        granted
    }

    /// Removes `process`'s share (it stopped).
    pub fn leave(&mut self, process: &str) {
        self.shares.remove(process);
    }
}
