//! Progressive scans (T.81 G.1.2, as libjpeg's jdphuff.c decodes them): DC first and
//! refinement scans, AC first scans with end-of-band runs, and AC refinement scans
//! (successive approximation). Coefficients accumulate in the component buffers; the
//! transform runs once all scans are read.

use super::error::JpegError;
use super::huffman::{BitReader, HuffmanTable};
use super::markers::ZIGZAG;
use super::scan::{BlockDecoder, ComponentBuffer};

/// `ZIGZAG` for band positions up to 79, the extra ones pointing at coefficient 63
/// as libjpeg's `jpeg_natural_order` table does for corrupt runs.
fn natural(k: usize) -> usize {
    ZIGZAG[k.min(63)]
}

/// Which of the four progressive scan kinds a scan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScanKind {
    /// DC, first pass (`Ss = 0`, `Ah = 0`).
    DcFirst,
    /// DC, one more bit (`Ss = 0`, `Ah > 0`).
    DcRefine,
    /// AC band, first pass.
    AcFirst,
    /// AC band, one more bit.
    AcRefine,
}

/// The block decoder of progressive scans.
pub(super) struct Progressive<'a> {
    /// The scan kind.
    pub kind: ScanKind,
    /// The Huffman table of each scan component (DC for DC scans, AC for AC scans;
    /// `None` for DC refinement, which has no codes).
    pub tables: Vec<Option<&'a HuffmanTable>>,
    /// Frame component index of each scan component.
    pub targets: Vec<usize>,
    /// First and last coefficient of the band (zigzag order).
    pub band: (usize, usize),
    /// The bit position of this scan (`Al`).
    pub al: u32,
    /// DC predictions of each scan component.
    pub preds: [i32; 4],
    /// Blocks still to skip in the current end-of-band run.
    pub eob_run: u32,
    /// All components' buffers.
    pub buffers: &'a mut [ComponentBuffer],
}

impl<'a> Progressive<'a> {
    fn table(&self, reader: &BitReader, i: usize) -> Result<&'a HuffmanTable, JpegError> {
        // Checked when the scan was set up; an error rather than a panic regardless.
        self.tables[i].ok_or_else(|| reader.corrupt("scan without its Huffman table"))
    }

    fn dc_first(&mut self, r: &mut BitReader, i: usize, block: usize) -> Result<(), JpegError> {
        let size = u32::from(r.decode(self.table(r, i)?)?);
        self.preds[i] = self.preds[i].wrapping_add(r.receive_extend(size));
        let value = self.preds[i].wrapping_shl(self.al) as i16;
        self.buffers[self.targets[i]].coefs[block][0] = value;
        Ok(())
    }

    fn dc_refine(&mut self, r: &mut BitReader, i: usize, block: usize) {
        if r.bit() {
            self.buffers[self.targets[i]].coefs[block][0] |= (1i32 << self.al) as i16;
        }
    }

    fn ac_first(&mut self, r: &mut BitReader, i: usize, block: usize) -> Result<(), JpegError> {
        if self.eob_run > 0 {
            self.eob_run -= 1;
            return Ok(());
        }
        let table = self.table(r, i)?;
        let (ss, se) = self.band;
        let coefs = &mut self.buffers[self.targets[i]].coefs[block];
        let mut k = ss;
        while k <= se {
            let rs = r.decode(table)?;
            let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
            if size != 0 {
                k += run as usize;
                coefs[natural(k)] = r.receive_extend(size).wrapping_shl(self.al) as i16;
            } else if run == 15 {
                k += 15;
            } else {
                self.eob_run = (1 << run) + r.bits(run) - 1;
                break;
            }
            k += 1;
        }
        Ok(())
    }

    fn ac_refine(&mut self, r: &mut BitReader, i: usize, block: usize) -> Result<(), JpegError> {
        let (ss, se) = self.band;
        let p1 = (1i32 << self.al) as i16;
        let m1 = (-1i32 << self.al) as i16;
        // Appends a correction bit to an already nonzero coefficient.
        let refine = |r: &mut BitReader, coef: &mut i16| {
            if r.bit() && (*coef & p1) == 0 {
                *coef = coef.wrapping_add(if *coef >= 0 { p1 } else { m1 });
            }
        };
        let mut k = ss;
        if self.eob_run == 0 {
            let table = self.table(r, i)?;
            let coefs = &mut self.buffers[self.targets[i]].coefs[block];
            while k <= se {
                let rs = r.decode(table)?;
                let mut run = i32::from(rs >> 4);
                let size = rs & 15;
                let mut value = 0i16;
                if size != 0 {
                    // Only size 1 is valid; libjpeg warns and goes on for others.
                    value = if r.bit() { p1 } else { m1 };
                } else if run != 15 {
                    self.eob_run = (1u32 << run) + r.bits(run as u32);
                    break;
                }
                // Skip `run` zero coefficients, refining the nonzero ones met.
                while k <= se {
                    let coef = &mut coefs[natural(k)];
                    if *coef != 0 {
                        refine(r, coef);
                    } else {
                        run -= 1;
                        if run < 0 {
                            break;
                        }
                    }
                    k += 1;
                }
                if value != 0 {
                    coefs[natural(k)] = value;
                }
                k += 1;
            }
        }
        if self.eob_run > 0 {
            // Inside an end-of-band run: only refine the nonzero coefficients.
            let coefs = &mut self.buffers[self.targets[i]].coefs[block];
            for k in k..=se {
                let coef = &mut coefs[natural(k)];
                if *coef != 0 {
                    refine(r, coef);
                }
            }
            self.eob_run -= 1;
        }
        Ok(())
    }
}

impl BlockDecoder for Progressive<'_> {
    fn decode_block(
        &mut self,
        reader: &mut BitReader,
        scan_component: usize,
        bx: usize,
        by: usize,
    ) -> Result<(), JpegError> {
        let block = by * self.buffers[self.targets[scan_component]].blocks_w + bx;
        match self.kind {
            ScanKind::DcFirst => self.dc_first(reader, scan_component, block),
            ScanKind::DcRefine => {
                self.dc_refine(reader, scan_component, block);
                Ok(())
            }
            ScanKind::AcFirst => self.ac_first(reader, scan_component, block),
            ScanKind::AcRefine => self.ac_refine(reader, scan_component, block),
        }
    }

    fn restart(&mut self) {
        self.preds = [0; 4];
        self.eob_run = 0;
    }
}
