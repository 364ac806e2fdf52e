//! What the criterion benches share: a benchmark group with its sampling
//! settings in one call.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};

/// A group of `samples` samples, warmed up for `warm_up`, measured for
/// `measure`.
pub fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    samples: usize,
    warm_up: Duration,
    measure: Duration,
) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(samples)
        .warm_up_time(warm_up)
        .measurement_time(measure);
    group
}
