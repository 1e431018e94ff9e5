//! Walking the MCUs of one scan (interleaved or not, with restart markers), and the
//! sequential (baseline) block decoder, which transforms each block as it is read.

use super::error::JpegError;
use super::huffman::{BitReader, HuffmanTable};
use super::idct::idct_islow;
use super::markers::{Frame, Scan, ZIGZAG};

/// The samples (and, for progressive files, coefficients) of one component, whole
/// MCUs wide and high.
pub(super) struct ComponentBuffer {
    /// Blocks per row.
    pub blocks_w: usize,
    /// Coefficients of every block in natural order (progressive files only).
    pub coefs: Vec<[i16; 64]>,
    /// Samples, `blocks_w * 8` per row.
    pub plane: Vec<u8>,
    /// The quantization table, latched when the component's first scan starts.
    pub quant: Option<[u16; 64]>,
}

impl ComponentBuffer {
    /// Transforms one block of coefficients into the plane at block `(bx, by)`.
    pub fn idct_block(&mut self, coefs: &[i16; 64], quant: &[u16; 64], bx: usize, by: usize) {
        let stride = self.blocks_w * 8;
        idct_islow(
            coefs,
            quant,
            &mut self.plane[by * 8 * stride + bx * 8..],
            stride,
        );
    }
}

/// What a scan does with each block.
pub(super) trait BlockDecoder {
    /// Decodes the block `(bx, by)` of the scan's component number `scan_component`.
    fn decode_block(
        &mut self,
        reader: &mut BitReader,
        scan_component: usize,
        bx: usize,
        by: usize,
    ) -> Result<(), JpegError>;

    /// Resets the prediction state at a restart marker.
    fn restart(&mut self);
}

/// Decodes the entropy-coded data of `scan` starting at `pos`; returns the position
/// after it.
pub(super) fn decode_scan(
    data: &[u8],
    pos: usize,
    frame: &Frame,
    scan: &Scan,
    restart_interval: usize,
    decoder: &mut impl BlockDecoder,
) -> Result<usize, JpegError> {
    let mut reader = BitReader::new(data, pos);
    let single = scan.components.len() == 1;
    let (mcus_x, mcus_y) = if single {
        // A one-component scan is never interleaved: one block per MCU, only the
        // blocks that hold image samples.
        let c = scan.components[0].index;
        (
            frame.component_width(c).div_ceil(8),
            frame.component_height(c).div_ceil(8),
        )
    } else {
        (frame.mcus_x, frame.mcus_y)
    };
    let mut next_restart = 0u8;
    for mcu in 0..mcus_x * mcus_y {
        if restart_interval > 0 && mcu > 0 && mcu % restart_interval == 0 {
            reader.restart(next_restart)?;
            next_restart = next_restart.wrapping_add(1);
            decoder.restart();
        }
        let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
        if single {
            decoder.decode_block(&mut reader, 0, mx, my)?;
        } else {
            for (i, sc) in scan.components.iter().enumerate() {
                let c = &frame.components[sc.index];
                for by in 0..c.v {
                    for bx in 0..c.h {
                        decoder.decode_block(&mut reader, i, mx * c.h + bx, my * c.v + by)?;
                    }
                }
            }
        }
        reader.check_overrun()?;
    }
    Ok(reader.position())
}

/// Huffman-decodes one sequential block (T.81 F.2.2) into `coefs` (natural order).
/// Like libjpeg, a run past coefficient 63 lands on coefficient 63.
fn decode_sequential_block(
    reader: &mut BitReader,
    dc: &HuffmanTable,
    ac: &HuffmanTable,
    pred: &mut i32,
    coefs: &mut [i16; 64],
) -> Result<(), JpegError> {
    let size = u32::from(reader.decode(dc)?);
    *pred = pred.wrapping_add(reader.receive_extend(size));
    coefs[0] = *pred as i16;
    let mut k = 1;
    while k < 64 {
        let rs = reader.decode(ac)?;
        let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
        if size != 0 {
            k += run;
            coefs[ZIGZAG[k.min(63)]] = reader.receive_extend(size) as i16;
        } else if run != 15 {
            break;
        } else {
            k += 15;
        }
        k += 1;
    }
    Ok(())
}

/// The block decoder of sequential scans: decode, dequantize, transform.
pub(super) struct Sequential<'a> {
    /// `(dc, ac)` tables of each scan component.
    pub tables: Vec<(&'a HuffmanTable, &'a HuffmanTable)>,
    /// Frame component index of each scan component.
    pub targets: Vec<usize>,
    /// DC predictions of each scan component.
    pub preds: [i32; 4],
    /// All components' buffers.
    pub buffers: &'a mut [ComponentBuffer],
}

impl BlockDecoder for Sequential<'_> {
    fn decode_block(
        &mut self,
        reader: &mut BitReader,
        scan_component: usize,
        bx: usize,
        by: usize,
    ) -> Result<(), JpegError> {
        let (dc, ac) = self.tables[scan_component];
        let mut coefs = [0i16; 64];
        decode_sequential_block(reader, dc, ac, &mut self.preds[scan_component], &mut coefs)?;
        let buffer = &mut self.buffers[self.targets[scan_component]];
        // Latched before the scan started (`Decoder::latch_quant_tables`).
        let quant = buffer.quant.unwrap_or([0; 64]);
        buffer.idct_block(&coefs, &quant, bx, by);
        Ok(())
    }

    fn restart(&mut self) {
        self.preds = [0; 4];
    }
}
