//! GPU time per operation: a CUDA event before and after each timed call on the device's
//! stream, the intervals summed per operation name once the stream has caught up. The
//! engine's CUDA backend uses it with `GEMMA_CUDA_PROFILE=1`. Each interval includes the
//! gap before the next launch, so the table shows where the GPU's time goes.

use super::device::CudaDevice;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

type Event = cudarc::driver::CudaEvent;

/// Intervals recorded but not yet summed: (operation, start, end).
type Pending = Arc<Mutex<Vec<(&'static str, Event, Event)>>>;

/// Whether `GEMMA_CUDA_PROFILE=1` asks for a profile.
pub fn enabled_by_env() -> bool {
    std::env::var("GEMMA_CUDA_PROFILE").is_ok_and(|v| v == "1")
}

/// GPU time per operation name on one device's stream.
pub struct Profile {
    stream: Arc<cudarc::driver::CudaStream>,
    ctx: Arc<cudarc::driver::CudaContext>,
    pending: Pending,
    /// Per operation: total milliseconds and calls.
    totals: BTreeMap<&'static str, (f64, usize)>,
}

/// One call being timed: records its end event when dropped.
pub struct Span {
    name: &'static str,
    stream: Arc<cudarc::driver::CudaStream>,
    ctx: Arc<cudarc::driver::CudaContext>,
    start: Option<Event>,
    pending: Pending,
}

fn event(ctx: &Arc<cudarc::driver::CudaContext>) -> Option<Event> {
    let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
    ctx.new_event(flags).ok()
}

impl Drop for Span {
    fn drop(&mut self) {
        // Best effort: a failed record drops the interval (the error resurfaces at the
        // backend's next synchronizing call).
        let Some(start) = self.start.take() else {
            return;
        };
        if let Some(end) = event(&self.ctx) {
            if end.record(&self.stream).is_ok() {
                if let Ok(mut p) = self.pending.lock() {
                    p.push((self.name, start, end));
                }
            }
        }
    }
}

impl Profile {
    /// A profile of the calls on `dev`'s stream.
    pub fn new(dev: &CudaDevice) -> Profile {
        Profile {
            stream: dev.stream().clone(),
            ctx: dev.context().clone(),
            pending: Arc::new(Mutex::new(Vec::new())),
            totals: BTreeMap::new(),
        }
    }

    /// Starts timing a call of `name` (its launches follow on the stream).
    pub fn span(&self, name: &'static str) -> Span {
        let start = event(&self.ctx).filter(|e| e.record(&self.stream).is_ok());
        Span {
            name,
            stream: self.stream.clone(),
            ctx: self.ctx.clone(),
            start,
            pending: self.pending.clone(),
        }
    }

    /// Sums the recorded intervals; call after the stream has been synchronized.
    pub fn collect(&mut self) {
        let done = match self.pending.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return,
        };
        for (name, start, end) in done {
            if let Ok(ms) = start.elapsed_ms(&end) {
                let t = self.totals.entry(name).or_insert((0.0, 0));
                t.0 += f64::from(ms);
                t.1 += 1;
            }
        }
    }

    /// Total milliseconds and calls of operation `name` collected so far.
    pub fn total(&self, name: &str) -> (f64, usize) {
        self.totals.get(name).copied().unwrap_or((0.0, 0))
    }

    /// The table: operation, calls, total ms, mean us, share of the summed time.
    pub fn report(&self) -> String {
        report(&self.totals)
    }
}

/// The table of [`Profile::report`] for per-operation (total ms, calls), largest first.
fn report(totals: &BTreeMap<&'static str, (f64, usize)>) -> String {
    let all: f64 = totals.values().map(|t| t.0).sum();
    let mut rows: Vec<_> = totals.iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let mut out = format!("GPU time per operation (GEMMA_CUDA_PROFILE=1), {all:.1} ms in all:\n");
    for (name, (ms, calls)) in rows {
        let _ = writeln!(
            out,
            "  {name:<22} {calls:>8} calls {ms:>10.2} ms {:>9.2} us/call {:>5.1}%",
            1000.0 * ms / *calls as f64,
            100.0 * ms / all.max(f64::MIN_POSITIVE)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_operations_by_time_with_their_share() {
        let totals = BTreeMap::from([("add", (1.0, 10)), ("matmul (mmvq)", (3.0, 30))]);
        let table = report(&totals);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("4.0 ms in all"), "{table}");
        assert!(
            lines[1].trim_start().starts_with("matmul (mmvq)"),
            "{table}"
        );
        assert!(
            lines[1].contains("100.00 us/call") && lines[1].contains("75.0%"),
            "{table}"
        );
        assert!(
            lines[2].trim_start().starts_with("add") && lines[2].contains("25.0%"),
            "{table}"
        );
    }
}
