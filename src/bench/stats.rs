//! Latency summaries.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
}

/// Nearest-rank percentiles of `samples` (sorted in place).
pub fn summarize(samples: &mut [Duration]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let r = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[r.clamp(1, samples.len()) - 1]
    };
    Summary {
        count: samples.len(),
        p50: rank(50.0),
        p99: rank(99.0),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = summarize(&mut v);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        let mut ten: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(summarize(&mut ten).p99, Duration::from_millis(10));
    }
}
