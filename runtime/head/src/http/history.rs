//! The dashboard's charts come from the head's own memory: once a second
//! the head samples the tasks ended, the object store's bytes and the CPUs
//! in use, and keeps the last [`KEEP`] samples (no Prometheus or Grafana
//! needed to see the last minutes).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use crate::Head;
use crate::state::SampleNumbers;

/// Samples kept: ten minutes at one a second.
pub const KEEP: usize = 600;
/// How often the head samples.
pub const EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub unix_ms: u64,
    pub n: SampleNumbers,
}

#[derive(Debug, Default)]
pub struct History {
    points: VecDeque<Point>,
}

impl History {
    pub fn push(&mut self, p: Point) {
        self.points.push_back(p);
        while self.points.len() > KEEP {
            self.points.pop_front();
        }
    }

    pub fn points(&self) -> Vec<Point> {
        self.points.iter().copied().collect()
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Head {
    /// Take one sample now.
    pub(crate) fn sample(&self) {
        let mut core = self.core.lock();
        let n = core.state.sample_numbers();
        core.history.push(Point {
            unix_ms: unix_ms(),
            n,
        });
    }
}

/// Sample `head` every [`EVERY`] until the returned guard is dropped.
pub(crate) fn start_sampling(head: Head) -> AbortOnDrop {
    let task = tokio::spawn(async move {
        let mut every = tokio::time::interval(EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            head.sample();
        }
    });
    AbortOnDrop(task)
}

pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One chart's series: (unix ms, value).
pub type Series = Vec<(u64, f64)>;

/// The three series the overview draws: tasks ended per second, object
/// store bytes, CPUs in use (with the total).
pub fn series(points: &[Point]) -> (Series, Series, Series, Series) {
    let mut rate = Vec::new();
    for w in points.windows(2) {
        let dt = w[1].unix_ms.saturating_sub(w[0].unix_ms) as f64 / 1000.0;
        if dt > 0.0 {
            let d = w[1].n.attempts_ended.saturating_sub(w[0].n.attempts_ended) as f64;
            rate.push((w[1].unix_ms, d / dt));
        }
    }
    let bytes = points
        .iter()
        .map(|p| (p.unix_ms, p.n.object_bytes as f64))
        .collect();
    let cpus = points.iter().map(|p| (p.unix_ms, p.n.cpus_used)).collect();
    let total = points.iter().map(|p| (p.unix_ms, p.n.cpus_total)).collect();
    (rate, bytes, cpus, total)
}

/// An SVG line chart of `series` (and a dashed `limit` line), `w`×`h`
/// pixels, its top labelled with the largest value by `label`.
pub fn svg_chart(
    title: &str,
    series: &Series,
    limit: Option<&Series>,
    label: impl Fn(f64) -> String,
) -> String {
    const W: f64 = 480.0;
    const H: f64 = 120.0;
    let mut max = series.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    if let Some(l) = limit {
        max = l.iter().map(|p| p.1).fold(max, f64::max);
    }
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let (t0, t1) = match (series.first(), series.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (a.0, b.0),
        (Some(a), _) => (a.0, a.0 + 1),
        _ => (0, 1),
    };
    let path = |s: &Series| {
        let mut d = String::new();
        for (i, (t, v)) in s.iter().enumerate() {
            let x = (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64 * W;
            let y = H - v / top * H;
            let _ = write!(d, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
        }
        d
    };
    let last = series.last().map_or(0.0, |p| p.1);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let _ = write!(
        svg,
        r#"<rect width="{W}" height="{H}" class="bg"/><text x="4" y="14" class="t">{}: {}</text><text x="{}" y="14" text-anchor="end" class="t">max {}</text>"#,
        escape(title),
        escape(&label(last)),
        W - 4.0,
        escape(&label(max))
    );
    if let Some(l) = limit {
        let _ = write!(svg, r#"<path d="{}" class="limit"/>"#, path(l));
    }
    let _ = write!(svg, r#"<path d="{}" class="line"/></svg>"#, path(series));
    svg
}

/// Text made safe inside SVG/HTML.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
