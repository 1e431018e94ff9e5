//! Decode steps as one CUDA graph (opt-in: `GEMMA_CUDA_GRAPH=1`).
//!
//! A one-token step of the forward pass is the same sequence of backend calls every time:
//! only its token and position change. With the graph enabled, the backend runs the first
//! one-token step eagerly (it uploads the weights and sizes every buffer), captures the
//! second into a graph (the stream records the launches instead of running them) and
//! replays that graph for every later one: the calls of a replayed step launch nothing, they
//! only fold their arguments into a signature and note the position. The token and the
//! position live in two one-element device buffers that every captured kernel reads
//! ([`StepInputs`]), written just before each launch of the graph, so the graph's pointers
//! and parameters never change.
//!
//! A step ends (the graph is launched) at the next `read` (the logits), at the next
//! embedding, or at any call that is not part of a step (a trace's mid-step read ends the
//! graph there; the rest of the step runs eagerly). A replayed step whose signature differs
//! from the captured one (another call sequence, e.g. a one-token chunk without logits)
//! fails with an error instead of running something else, and drops the graph: the next
//! one-token step captures a new one.

use super::core_err;
use crate::CoreError;
use gemma_kernels::cuda::graph::{begin_capture, end_capture, DeviceGraph};
use gemma_kernels::cuda::{self, CudaDevice, CudaSlice};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Graph launches in this process (all backends): lets tests see that steps really ran
/// as graphs.
pub(super) static LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// Whether `GEMMA_CUDA_GRAPH=1` asks for decode graphs.
pub(super) fn enabled_by_env() -> bool {
    std::env::var("GEMMA_CUDA_GRAPH").is_ok_and(|v| v == "1")
}

/// The device-resident inputs of a one-token step: its token id and its position.
pub(super) struct StepInputs {
    /// `[token]`, read by the embedding gather.
    pub ids: CudaSlice<i32>,
    /// `[position]`, read by RoPE, the KV store and decode attention.
    pub pos: CudaSlice<i32>,
}

/// Where the current one-token step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StepMode {
    /// No step in flight under the graph (eager execution).
    Idle,
    /// The stream is capturing this step's launches.
    Capturing,
    /// The captured graph will run this step; calls launch nothing.
    Replaying,
}

/// The decode-graph state of a backend.
pub(super) struct DecodeGraph {
    /// Opt-in switch.
    pub enabled: bool,
    /// One-token steps run eagerly so far (the first one warms every buffer up).
    eager_steps: usize,
    /// The step buffers, allocated at the first one-token step.
    pub inputs: Option<StepInputs>,
    graph: Option<DeviceGraph>,
    /// Signature of the captured step.
    graph_sig: u64,
    /// Current step: mode, signature so far, token, position.
    pub mode: StepMode,
    sig: u64,
    token: i32,
    pos: Option<usize>,
}

/// Eager one-token steps before the capture.
const WARM_UP_STEPS: usize = 1;

fn graph_err(reason: &'static str) -> CoreError {
    CoreError::DeviceUnavailable {
        device: "cuda (GEMMA_CUDA_GRAPH=1)".into(),
        reason,
    }
}

impl DecodeGraph {
    /// A disabled or enabled (not yet warmed up) graph state.
    pub fn new(enabled: bool) -> Self {
        DecodeGraph {
            enabled,
            eager_steps: 0,
            inputs: None,
            graph: None,
            graph_sig: 0,
            mode: StepMode::Idle,
            sig: 0,
            token: 0,
            pos: None,
        }
    }

    /// Folds one call (a tag and its arguments) into the step's signature (FNV-1a).
    pub fn note(&mut self, tag: u64, args: &[u64]) {
        for &v in std::iter::once(&tag).chain(args) {
            self.sig ^= v;
            self.sig = self.sig.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Records the position a call of this step works at (every call must agree).
    pub fn note_pos(&mut self, pos: usize) -> Result<(), CoreError> {
        match self.pos {
            Some(p) if p != pos => Err(graph_err(
                "two calls of one decode step gave different positions",
            )),
            _ => {
                self.pos = Some(pos);
                Ok(())
            }
        }
    }

    /// Starts a one-token step with `token`: returns the mode it runs in. Flush any
    /// previous step first.
    pub fn begin_step(&mut self, dev: &CudaDevice, token: u32) -> Result<StepMode, CoreError> {
        if self.inputs.is_none() {
            self.inputs = Some(StepInputs {
                ids: cuda::zeros::<i32>(dev, 1).map_err(core_err)?,
                pos: cuda::zeros::<i32>(dev, 1).map_err(core_err)?,
            });
        }
        self.sig = 0xcbf2_9ce4_8422_2325;
        self.pos = None;
        self.token = i32::try_from(token).map_err(|_| graph_err("token id above 2^31"))?;
        self.mode = if self.graph.is_some() {
            StepMode::Replaying
        } else if self.eager_steps >= WARM_UP_STEPS {
            begin_capture(dev).map_err(core_err)?;
            StepMode::Capturing
        } else {
            self.eager_steps += 1;
            StepMode::Idle
        };
        Ok(self.mode)
    }

    /// Ends the step in flight, if any: finishes the capture, writes the step's token and
    /// position to the device and launches the graph.
    pub fn flush(&mut self, dev: &CudaDevice) -> Result<(), CoreError> {
        let mode = std::mem::replace(&mut self.mode, StepMode::Idle);
        match mode {
            StepMode::Idle => return Ok(()),
            StepMode::Capturing => {
                let graph = end_capture(dev).map_err(core_err)?;
                self.graph =
                    Some(graph.ok_or_else(|| graph_err("the captured decode step was empty"))?);
                self.graph_sig = self.sig;
            }
            StepMode::Replaying => {
                if self.sig != self.graph_sig {
                    self.graph = None;
                    return Err(graph_err(
                        "this decode step's calls differ from the captured step's (unset GEMMA_CUDA_GRAPH)",
                    ));
                }
            }
        }
        let pos = self
            .pos
            .ok_or_else(|| graph_err("a decode step without a position"))?;
        let pos = i32::try_from(pos).map_err(|_| graph_err("position above 2^31"))?;
        let (inputs, graph) = match (self.inputs.as_mut(), self.graph.as_ref()) {
            (Some(i), Some(g)) => (i, g),
            _ => return Err(graph_err("no captured decode step to launch")),
        };
        let stream = dev.stream();
        stream
            .memcpy_htod(&[self.token], &mut inputs.ids)
            .map_err(|e| core_err(e.into()))?;
        stream
            .memcpy_htod(&[pos], &mut inputs.pos)
            .map_err(|e| core_err(e.into()))?;
        graph.launch().map_err(core_err)?;
        LAUNCHES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Abandons a step in flight after an error (ends a capture without keeping it).
    pub fn abort(&mut self, dev: &CudaDevice) {
        if self.mode == StepMode::Capturing {
            // The capture is discarded either way; its error adds nothing to the first one.
            let _ = end_capture(dev);
        }
        self.mode = StepMode::Idle;
    }
}
