//! Seeded fault and jitter draws: the same seed gives the same sequence.

use crate::config::MockConfig;

/// A failure injected instead of a normal response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Close the connection with no response.
    Reset,
    /// Send nothing for an hour.
    Hang,
    /// Answer 500.
    ServerError,
}

/// Everything random about one request, drawn together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Draws {
    pub(crate) fault: Option<Fault>,
    /// Cut the body in half, if the request ends in a 200.
    pub(crate) truncate: bool,
    pub(crate) jitter_ms: u64,
}

/// The fault RNG and the probabilities it is compared with.
#[derive(Debug)]
pub(crate) struct Faults {
    rng: fastrand::Rng,
    reset_rate: f64,
    hang_rate: f64,
    fail_rate: f64,
    truncate_rate: f64,
    jitter_ms: u64,
}

impl Faults {
    /// The draws `cfg` asks for, from an RNG seeded with `cfg.seed`.
    pub(crate) fn new(cfg: &MockConfig) -> Faults {
        Faults {
            rng: fastrand::Rng::with_seed(cfg.seed),
            reset_rate: cfg.reset_rate,
            hang_rate: cfg.hang_rate,
            fail_rate: cfg.fail_rate,
            truncate_rate: cfg.truncate_rate,
            jitter_ms: cfg.jitter_ms,
        }
    }

    /// Draws for the next request. Every draw is made whatever the rates, so
    /// each request consumes the same amount of the sequence and one request's
    /// outcome never shifts another's.
    pub(crate) fn draw(&mut self) -> Draws {
        let reset = self.rng.f64() < self.reset_rate;
        let hang = self.rng.f64() < self.hang_rate;
        let fail = self.rng.f64() < self.fail_rate;
        let truncate = self.rng.f64() < self.truncate_rate;
        let jitter_ms = self.rng.u64(0..=self.jitter_ms);
        let fault = if reset {
            Some(Fault::Reset)
        } else if hang {
            Some(Fault::Hang)
        } else if fail {
            Some(Fault::ServerError)
        } else {
            None
        };
        Draws {
            fault,
            truncate,
            jitter_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> MockConfig {
        MockConfig {
            seed,
            fail_rate: 0.5,
            jitter_ms: 10,
            ..MockConfig::default()
        }
    }

    #[test]
    fn a_seed_fixes_the_sequence() {
        let mut a = Faults::new(&config(7));
        let mut b = Faults::new(&config(7));
        let first: Vec<Draws> = (0..50).map(|_| a.draw()).collect();
        assert_eq!(first, (0..50).map(|_| b.draw()).collect::<Vec<_>>());
        let mut c = Faults::new(&config(8));
        assert_ne!(first, (0..50).map(|_| c.draw()).collect::<Vec<_>>());
        let failures = first
            .iter()
            .filter(|d| d.fault == Some(Fault::ServerError))
            .count();
        assert!(
            (10..=40).contains(&failures),
            "{failures} of 50 at rate 0.5"
        );
        assert!(first.iter().all(|d| d.jitter_ms <= 10 && !d.truncate));
    }

    #[test]
    fn certain_faults_take_precedence_in_order() {
        let cfg = MockConfig {
            reset_rate: 1.0,
            hang_rate: 1.0,
            fail_rate: 1.0,
            ..MockConfig::default()
        };
        assert_eq!(Faults::new(&cfg).draw().fault, Some(Fault::Reset));
        let cfg = MockConfig {
            reset_rate: 0.0,
            ..cfg
        };
        assert_eq!(Faults::new(&cfg).draw().fault, Some(Fault::Hang));
        assert_eq!(Faults::new(&MockConfig::default()).draw().fault, None);
    }
}
