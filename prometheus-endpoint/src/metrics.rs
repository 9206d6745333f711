//! Metric values that a data path can update with atomics alone, and their exposition.
//!
//! prometheus-client's own `Histogram` takes a mutex on every observation and its `Counter`
//! sample always gains a `_total` suffix. Components whose request path must not lock, or
//! whose metric names must match upstream's byte for byte (samples as Prometheus' Go client
//! writes them, without a suffix), keep these values instead and write them from a
//! [`Collector`](prometheus_client::collector::Collector) with the helpers here.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;

/// A histogram over fixed bucket bounds, updated with atomics only.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds, ascending; the `+Inf` bucket is implicit.
    bounds: Box<[f64]>,
    /// Observations per bucket (not cumulative); one more than `bounds`, for `+Inf`.
    counts: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with these upper bounds; they are sorted and deduplicated, and non-finite
    /// ones dropped (`+Inf` is always there).
    pub fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds: bounds.into_boxed_slice(),
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// `[(upper bound, observations in that bucket)]`, not cumulative, ending with `+Inf`:
    /// for readers other than the exposition (gorouter's `/varz` estimates percentiles).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.snapshot().2
    }

    /// `(sum, count, [(upper bound, count in that bucket)])`, as the encoder takes them.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        (
            f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count,
            buckets,
        )
    }
}

/// Writes a family of one unlabelled value whose sample carries exactly `name`: a gauge, or a
/// counter under upstream's suffix-less name (typed `unknown`, which OpenMetrics allows any
/// sample name for; Prometheus reads it as untyped and `rate()` works as on a counter).
pub fn encode_value(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: ValueKind,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind.metric_type())?;
    metric.encode_gauge(&value)
}

/// [`encode_value`] for a family with labels: one sample per `(labels, value)`.
pub fn encode_labelled_values<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: ValueKind,
    samples: impl IntoIterator<Item = (&'a L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind.metric_type())?;
    for (labels, value) in samples {
        family.encode_family(labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// Writes histograms as one family, one per label set.
pub fn encode_histograms<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histograms: impl IntoIterator<Item = (&'a L, &'a AtomicHistogram)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in histograms {
        let (sum, count, buckets) = histogram.snapshot();
        family
            .encode_family(labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
    }
    Ok(())
}

/// What a value written by [`encode_value`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Gauge,
    /// Only goes up; written without a `_total` suffix.
    Counter,
}

impl ValueKind {
    fn metric_type(self) -> MetricType {
        match self {
            ValueKind::Gauge => MetricType::Gauge,
            ValueKind::Counter => MetricType::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    #[derive(Debug)]
    struct Fixture {
        latency: AtomicHistogram,
        requests: AtomicU64,
    }

    #[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
    struct Component {
        component: String,
    }

    impl Collector for Fixture {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_value(
                &mut encoder,
                "total_requests",
                "requests",
                ValueKind::Counter,
                self.requests.load(Ordering::Relaxed),
            )?;
            let label = Component {
                component: "uaa".into(),
            };
            encode_histograms(
                &mut encoder,
                "latency",
                "latency",
                [(&label, &self.latency)],
            )
        }
    }

    fn render(fixture: Fixture) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(fixture));
        crate::encode(&registry)
    }

    #[test]
    fn a_counter_sample_keeps_the_upstream_name_without_a_suffix() {
        let text = render(Fixture {
            latency: AtomicHistogram::new(&[1.0]),
            requests: AtomicU64::new(5),
        });
        assert!(
            text.contains("# TYPE total_requests unknown\ntotal_requests 5\n"),
            "{text}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let latency = AtomicHistogram::new(&[2.0, 0.6]);
        latency.observe(0.5);
        latency.observe(2.0);
        latency.observe(7.0);
        let text = render(Fixture {
            latency,
            requests: AtomicU64::new(0),
        });
        for line in [
            "latency_sum{component=\"uaa\"} 9.5\n",
            "latency_count{component=\"uaa\"} 3\n",
            "latency_bucket{le=\"0.6\",component=\"uaa\"} 1\n",
            "latency_bucket{le=\"2.0\",component=\"uaa\"} 2\n",
            "latency_bucket{le=\"+Inf\",component=\"uaa\"} 3\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in {text}");
        }
    }

    #[test]
    fn an_observation_on_a_bound_falls_in_that_bucket() {
        let histogram = AtomicHistogram::new(&[1.0, 2.0]);
        histogram.observe(1.0);
        let (_, count, buckets) = histogram.snapshot();
        assert_eq!(count, 1);
        assert_eq!(buckets, vec![(1.0, 1), (2.0, 0), (f64::INFINITY, 0)]);
    }

    #[test]
    fn non_finite_bounds_are_dropped() {
        let histogram = AtomicHistogram::new(&[f64::NAN, 1.0, f64::INFINITY]);
        let (_, _, buckets) = histogram.snapshot();
        assert_eq!(buckets, vec![(1.0, 0), (f64::INFINITY, 0)]);
    }
}
