//! Decode steps as one CUDA graph (on by default; `GEMMA_CUDA_GRAPH=0` turns it off).
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
//! graph there; the rest of the step runs eagerly). Only a step that ends with its logits
//! being read is kept for replay (a captured one-token chunk without logits, e.g. a text
//! piece between two images, runs once and is dropped). Every call of a replayed step is
//! checked against the captured sequence as it comes: a step whose calls are the captured
//! ones, or their beginning without the logits (the graph then also computes an output
//! head nobody reads), runs the graph; any other sequence fails with an error instead of
//! running something else, and drops the graph: the next one-token step captures anew.

use super::core_err;
use crate::CoreError;
use gemma_kernels::cuda::graph::{begin_capture, end_capture, DeviceGraph};
use gemma_kernels::cuda::{self, CudaDevice, CudaSlice};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Graph launches in this process (all backends): lets tests see that steps really ran
/// as graphs.
pub(super) static LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// Whether decode graphs are on: unless `GEMMA_CUDA_GRAPH=0`.
pub(super) fn enabled_by_env() -> bool {
    std::env::var("GEMMA_CUDA_GRAPH").map_or(true, |v| v != "0")
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
    /// The captured step's signature after each of its calls.
    graph_sigs: Vec<u64>,
    /// Current step: mode, signature so far (and after each call), token, position, and
    /// whether a replayed step's calls left the captured sequence.
    pub mode: StepMode,
    sig: u64,
    sigs: Vec<u64>,
    token: i32,
    pos: Option<usize>,
    diverged: bool,
}

/// FNV-1a offset basis: the signature of a step before its first call.
const SIG_START: u64 = 0xcbf2_9ce4_8422_2325;

/// `sig` with one call (a tag and its arguments) folded in (FNV-1a over the words).
fn fold(mut sig: u64, tag: u64, args: &[u64]) -> u64 {
    for &v in std::iter::once(&tag).chain(args) {
        sig ^= v;
        sig = sig.wrapping_mul(0x0000_0100_0000_01b3);
    }
    sig
}

/// Eager one-token steps before the capture.
const WARM_UP_STEPS: usize = 1;

fn graph_err(reason: &'static str) -> CoreError {
    CoreError::DeviceUnavailable {
        device: "cuda (decode graph; GEMMA_CUDA_GRAPH=0 turns it off)".into(),
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
            graph_sigs: Vec::new(),
            mode: StepMode::Idle,
            sig: 0,
            sigs: Vec::new(),
            token: 0,
            pos: None,
            diverged: false,
        }
    }

    /// Folds one call (a tag and its arguments) into the step's signature (FNV-1a); a
    /// replayed step compares it with the captured step's call at the same place.
    pub fn note(&mut self, tag: u64, args: &[u64]) {
        self.sig = fold(self.sig, tag, args);
        if self.mode == StepMode::Replaying
            && self.graph_sigs.get(self.sigs.len()) != Some(&self.sig)
        {
            self.diverged = true;
        }
        self.sigs.push(self.sig);
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

    /// Starts a one-token step with `token` whose first call will be `tag` / `args`:
    /// returns the mode it runs in. A captured step that began with another first call
    /// (another session's buffers) is dropped, and this step runs eagerly as a new warm-up.
    /// Flush any previous step first.
    pub fn begin_step(
        &mut self,
        dev: &CudaDevice,
        token: u32,
        tag: u64,
        args: &[u64],
    ) -> Result<StepMode, CoreError> {
        if self.graph.is_some() && self.graph_sigs.first() != Some(&fold(SIG_START, tag, args)) {
            self.graph = None;
            self.eager_steps = 0;
        }
        if self.inputs.is_none() {
            self.inputs = Some(StepInputs {
                ids: cuda::zeros::<i32>(dev, 1).map_err(core_err)?,
                pos: cuda::zeros::<i32>(dev, 1).map_err(core_err)?,
            });
        }
        self.sig = SIG_START;
        self.sigs.clear();
        self.diverged = false;
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
    /// position to the device and launches the graph. `logits_read`: the step ends because
    /// its logits are read (only such a captured step is kept for replay).
    pub fn flush(&mut self, dev: &CudaDevice, logits_read: bool) -> Result<(), CoreError> {
        let mode = std::mem::replace(&mut self.mode, StepMode::Idle);
        let mut keep = true;
        match mode {
            StepMode::Idle => return Ok(()),
            StepMode::Capturing => {
                let graph = end_capture(dev).map_err(core_err)?;
                self.graph =
                    Some(graph.ok_or_else(|| graph_err("the captured decode step was empty"))?);
                self.graph_sigs = std::mem::take(&mut self.sigs);
                keep = logits_read;
            }
            StepMode::Replaying => {
                let whole = self.sigs.len() == self.graph_sigs.len();
                // A step ending early (no logits) runs the whole graph: the rest is the
                // output head, whose results nobody reads.
                if self.diverged || (!whole && logits_read) {
                    self.graph = None;
                    return Err(graph_err(
                        "this decode step's calls differ from the captured step's (GEMMA_CUDA_GRAPH=0 turns decode graphs off)",
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
        if !keep {
            self.graph = None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A step that notes `calls` (tag, argument) pairs in `mode`, after `captured`.
    fn step(mode: StepMode, captured: &[u64], calls: &[(u64, u64)]) -> DecodeGraph {
        let mut g = DecodeGraph::new(true);
        g.graph_sigs = captured.to_vec();
        g.mode = mode;
        g.sig = SIG_START;
        for &(tag, arg) in calls {
            g.note(tag, &[arg]);
        }
        g
    }

    #[test]
    fn replayed_calls_are_checked_against_the_captured_sequence_as_they_come() {
        let calls = [(1, 10), (2, 20), (3, 30)];
        let captured = step(StepMode::Capturing, &[], &calls).sigs;
        assert_eq!(captured.len(), 3);
        assert_eq!(
            captured[0],
            fold(SIG_START, 1, &[10]),
            "first call as begin_step sees it"
        );

        let same = step(StepMode::Replaying, &captured, &calls);
        assert!(!same.diverged && same.sigs.len() == captured.len());

        let prefix = step(StepMode::Replaying, &captured, &calls[..2]);
        assert!(!prefix.diverged && prefix.sigs.len() < captured.len());

        let longer = step(
            StepMode::Replaying,
            &captured,
            &[(1, 10), (2, 20), (3, 30), (4, 40)],
        );
        assert!(longer.diverged, "a call past the captured step");

        let other_arg = step(StepMode::Replaying, &captured, &[(1, 10), (2, 21), (3, 30)]);
        assert!(other_arg.diverged, "another argument in the second call");

        let swapped = step(StepMode::Replaying, &captured, &[(2, 20), (1, 10), (3, 30)]);
        assert!(swapped.diverged, "the same calls in another order");
    }
}
