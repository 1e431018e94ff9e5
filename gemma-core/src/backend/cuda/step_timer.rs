//! Where a replayed decode step's wall time goes, with `GEMMA_CUDA_PROFILE=steps` (decode
//! graphs stay on): the host's walk through the step's calls (which launch nothing when the
//! step is replayed), the graph's time on the GPU (two CUDA events around its launch), the
//! read of its result (waiting for the GPU, then the copy of the logits or, for a greedy
//! step, the pick on the device and the copy of its index) and the wall time from one replayed
//! step's embedding to the next one's (any other embedding between them, a prefill's,
//! breaks the pair). Printed to stderr when the backend is dropped.

use gemma_kernels::cuda::profile::{Profile, Span};
use gemma_kernels::cuda::CudaDevice;
use std::time::{Duration, Instant};

/// Whether `GEMMA_CUDA_PROFILE=steps` asks for step times.
pub(super) fn enabled_by_env() -> bool {
    std::env::var("GEMMA_CUDA_PROFILE").is_ok_and(|v| v == "steps")
}

/// Sums of the parts of replayed decode steps.
pub(super) struct StepTimer {
    gpu: Profile,
    /// When the replayed step in flight began (its embedding), until its graph launch.
    walk_start: Option<Instant>,
    walk: Duration,
    launch: Duration,
    steps: usize,
    /// Set by a replayed step's launch: the next read is that step's result read.
    read_pending: bool,
    read: Duration,
    reads: usize,
    /// The previous embedding, when it began a replayed step: the wall time between steps.
    last_replayed: Option<Instant>,
    wall: Duration,
    walls: usize,
}

impl StepTimer {
    /// A timer of the decode graphs launched on `dev`'s stream.
    pub fn new(dev: &CudaDevice) -> StepTimer {
        StepTimer {
            gpu: Profile::new(dev),
            walk_start: None,
            walk: Duration::ZERO,
            launch: Duration::ZERO,
            steps: 0,
            read_pending: false,
            read: Duration::ZERO,
            reads: 0,
            last_replayed: None,
            wall: Duration::ZERO,
            walls: 0,
        }
    }

    /// An embedding; `replayed`: it begins a step that runs the captured graph.
    pub fn embed(&mut self, replayed: bool) {
        let now = Instant::now();
        if let (true, Some(last)) = (replayed, self.last_replayed) {
            self.wall += now - last;
            self.walls += 1;
        }
        self.last_replayed = replayed.then_some(now);
        self.walk_start = replayed.then_some(now);
    }

    /// The replayed step's calls are done: its graph is about to be launched. The returned
    /// span times the launch on the GPU until it drops; [`Self::launched`] follows.
    pub fn launching(&mut self) -> Option<(Span, Instant)> {
        let start = self.walk_start.take()?;
        let now = Instant::now();
        self.walk += now - start;
        Some((self.gpu.span("decode step graph"), now))
    }

    /// The graph launched at `since` (by the host's clock) is on the stream.
    pub fn launched(&mut self, since: Instant) {
        self.launch += since.elapsed();
        self.steps += 1;
        self.read_pending = true;
    }

    /// A read of `took` ended; it counts when it is a replayed step's result read.
    pub fn read(&mut self, took: Duration) {
        if std::mem::take(&mut self.read_pending) {
            self.read += took;
            self.reads += 1;
        }
    }

    /// Sums the GPU intervals; call after the stream has been synchronized.
    pub fn collect(&mut self) {
        self.gpu.collect();
    }

    /// One line per part, in microseconds per step.
    pub fn report(&self) -> String {
        let per = |d: Duration, n: usize| 1e6 * d.as_secs_f64() / n.max(1) as f64;
        let (gpu_ms, gpu_n) = self.gpu.total("decode step graph");
        format!(
            "decode steps (GEMMA_CUDA_PROFILE=steps): {} replayed; per step: host walk {:.1} us, \
             graph launch {:.1} us, GPU graph {:.1} us, result read {:.1} us (waits for the GPU), \
             wall {:.1} us from step to step\n",
            self.steps,
            per(self.walk, self.steps),
            per(self.launch, self.steps),
            1000.0 * gpu_ms / gpu_n.max(1) as f64,
            per(self.read, self.reads),
            per(self.wall, self.walls),
        )
    }
}
