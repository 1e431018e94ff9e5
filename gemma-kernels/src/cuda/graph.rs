//! Stream capture into a CUDA graph and its replay: the launches queued on the device's
//! stream between [`begin_capture`] and [`end_capture`] are recorded, not run, and
//! [`DeviceGraph::launch`] runs them all again with the same pointers and parameters (so
//! whatever changes between replays must be read by the kernels from device memory).
//! Capture uses the relaxed mode: host calls such as module loads stay legal meanwhile.

use super::device::CudaDevice;
use super::error::CudaError;
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;

/// An instantiated graph, replayable on the device's stream.
pub struct DeviceGraph {
    graph: CudaGraph,
}

// SAFETY: CUDA graphs may be used from any thread as long as no two threads use one at the
// same time (driver docs, "Graph object thread safety"); DeviceGraph is not Sync and every
// method binds the context to the calling thread first (cudarc's launch), so moving it to
// another thread is sound.
unsafe impl Send for DeviceGraph {}

/// Starts recording the launches of the device's stream.
pub fn begin_capture(dev: &CudaDevice) -> Result<(), CudaError> {
    Ok(dev
        .stream()
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?)
}

/// Stops recording and instantiates the graph (`None` when nothing was captured).
pub fn end_capture(dev: &CudaDevice) -> Result<Option<DeviceGraph>, CudaError> {
    let graph = dev.stream().end_capture(CUgraphInstantiate_flags(0))?;
    Ok(graph.map(|graph| DeviceGraph { graph }))
}

impl DeviceGraph {
    /// Queues one replay on the stream it was captured from.
    pub fn launch(&self) -> Result<(), CudaError> {
        Ok(self.graph.launch()?)
    }
}
