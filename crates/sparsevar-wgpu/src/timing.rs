//! Device-side launch timing for profiles: a timestamp before and after each launch's
//! dispatches, written inside the step's compute pass, so the steps run as they do untimed
//! (no waits between launches). The timestamps are resolved and read back when the times
//! are asked for, or when the query set is full.

use std::collections::BTreeMap;

/// Launches timed between two read-backs (two timestamps each).
pub(crate) const PAIRS: u32 = 2048;

pub(crate) struct Timer {
    pub query_set: wgpu::QuerySet,
    /// Where the queries resolve to (then copied to the staging buffer).
    pub resolved: wgpu::Buffer,
    /// The label new launches count under; `None`: they are not timed.
    pub label: Option<String>,
    /// The label of each timed launch, in query order (pair i: queries 2i and 2i + 1).
    pub pending: Vec<String>,
    /// Launches and device seconds per label, read back so far.
    pub totals: BTreeMap<String, (u64, f64)>,
}

impl Timer {
    pub(crate) fn new(device: &wgpu::Device) -> Timer {
        Timer {
            query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("launch timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * PAIRS,
            }),
            resolved: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: u64::from(2 * PAIRS) * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            label: None,
            pending: Vec::new(),
            totals: BTreeMap::new(),
        }
    }

    /// The queries of the next timed launch, if launches are timed now and there is room.
    pub(crate) fn next_pair(&mut self) -> Option<(u32, u32)> {
        let label = self.label.clone()?;
        let i = self.pending.len() as u32;
        if i == PAIRS {
            return None;
        }
        self.pending.push(label);
        Some((2 * i, 2 * i + 1))
    }

    pub(crate) fn full(&self) -> bool {
        self.label.is_some() && self.pending.len() as u32 == PAIRS
    }

    /// Add the read-back timestamps (`ticks`, two per pending launch) to the totals.
    pub(crate) fn add(&mut self, ticks: &[u64], period_ns: f64) {
        for (label, pair) in self.pending.drain(..).zip(ticks.chunks_exact(2)) {
            // A timestamp counter may wrap; an end before its start counts as nothing.
            let seconds = pair[1].saturating_sub(pair[0]) as f64 * period_ns * 1e-9;
            let e = self.totals.entry(label).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += seconds;
        }
    }
}
