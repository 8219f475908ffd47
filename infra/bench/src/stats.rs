//! Latency summaries: histograms in microseconds, reported in milliseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant digits.
pub fn micros_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

/// Records a duration in microseconds (at least 1, clamped to the range).
pub fn record_nanos(histogram: &mut Histogram<u64>, nanos: u64) {
    histogram.saturating_record((nanos / 1_000).max(1));
}

/// The percentiles a table shows, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |micros: u64| micros as f64 / 1_000.0;
        Self {
            count: histogram.len(),
            mean: histogram.mean() / 1_000.0,
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// `(quantile, milliseconds)` points for plotting a latency CDF.
pub fn cdf(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let quantiles = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0];
    quantiles.iter().map(|&q| (q, histogram.value_at_quantile(q) as f64 / 1_000.0)).collect()
}

/// Least-squares slope of `(seconds, value)` points, per hour: how fast a
/// quantity drifts over a long run, robust to the noise of single samples.
/// `None` with fewer than two distinct times.
///
/// ```
/// let points = [(0.0, 10.0), (1800.0, 11.0), (3600.0, 12.0)];
/// assert_eq!(chat_bench::stats::slope_per_hour(&points), Some(2.0));
/// ```
pub fn slope_per_hour(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for &(t, v) in points {
        covariance += (t - mean_t) * (v - mean_v);
        variance += (t - mean_t) * (t - mean_t);
    }
    (points.len() >= 2 && variance > 0.0).then(|| 3600.0 * covariance / variance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_in_milliseconds() {
        let mut h = micros_histogram();
        for ms in 1..=100u64 {
            record_nanos(&mut h, ms * 1_000_000);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 100);
        assert!((p.p50 - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.max - 100.0).abs() < 0.1, "{p:?}");
        assert_eq!(cdf(&h).last().map(|&(q, _)| q), Some(1.0));
    }

    #[test]
    fn slope_ignores_noise_around_a_line() {
        let points: Vec<(f64, f64)> =
            (0..60).map(|i| (i as f64 * 60.0, 50.0 + i as f64 / 60.0 + if i % 2 == 0 { 0.5 } else { -0.5 })).collect();
        let slope = slope_per_hour(&points).unwrap();
        assert!((slope - 1.0).abs() < 0.1, "{slope}");
        assert_eq!(slope_per_hour(&[(5.0, 1.0)]), None);
        assert_eq!(slope_per_hour(&[(5.0, 1.0), (5.0, 2.0)]), None);
        assert_eq!(slope_per_hour(&[]), None);
    }
}
