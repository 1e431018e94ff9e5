//! A JPEG decoder that reproduces libjpeg-turbo's default decompression bit for bit,
//! so that decoded pixels equal Pillow's (the reference preprocessing decodes with
//! Pillow, which uses libjpeg-turbo): Huffman-coded baseline, extended sequential and
//! progressive (spectral selection and successive approximation) files with restart
//! markers, 8-bit samples, 1, 3 or 4 components with any integer sampling ratios;
//! `JDCT_ISLOW` integer IDCT ([`idct`]), fancy upsampling ([`upsample`]), libjpeg's
//! color conversion and Pillow's CMYK handling ([`color`]).
//!
//! Not implemented (typed [`JpegError::Unsupported`] errors): arithmetic coding,
//! lossless and hierarchical modes, 12-bit samples, 2 components, fractional sampling
//! ratios. A progressive file whose scans stop before every coefficient is complete
//! gets libjpeg's inter-block smoothing ([`smoothing`]; complete files need none).
//! Truncated files are errors ([`JpegError::Truncated`]), as they are for Pillow by
//! default; libjpeg itself would pad them with zeros.

mod color;
mod error;
mod huffman;
mod idct;
mod markers;
mod progressive;
mod scan;
mod smoothing;
mod upsample;

pub use error::JpegError;

use color::ColorSpace;
use huffman::next_marker;
use markers::{Frame, HuffmanSlots, Scan};
use progressive::{Progressive, ScanKind};
use scan::{decode_scan, ComponentBuffer, Sequential};
use smoothing::{BlockGrid, CoefBits};
use upsample::Samples;

/// Most scans decoded from one file. Each scan may visit every block of the image,
/// so a small file with many tiny scans could otherwise cost minutes of CPU (real
/// progressive files have about 10; libjpeg-turbo's tools suggest limits of 500).
const MAX_SCANS: usize = 1000;

/// Whether `bytes` start like a JPEG file (SOI then a marker).
pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// A decoded image: `width * height * 3` bytes of RGB8, row-major.
pub(crate) struct Decoded {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// The pixels.
    pub rgb: Vec<u8>,
}

/// Decodes a JPEG file. `check_size(width, height)` runs on the frame header, before
/// anything proportional to the image size is allocated; its error is returned as is.
pub(crate) fn decode<E: From<JpegError>>(
    bytes: &[u8],
    check_size: impl FnOnce(u32, u32) -> Result<(), E>,
) -> Result<Decoded, E> {
    let mut decoder = Decoder::new(bytes);
    let frame = decoder.read_frame_header()?;
    check_size(frame.width as u32, frame.height as u32)?;
    Ok(decoder.decode(frame)?)
}

/// Parsing state between markers.
struct Decoder<'a> {
    data: &'a [u8],
    /// Offset of the next marker to read.
    pos: usize,
    quant: [Option<[u16; 64]>; 4],
    huffman: HuffmanSlots,
    restart_interval: usize,
    jfif: bool,
    adobe: Option<u8>,
    /// Precision of the low coefficients of each component (progressive files).
    coef_bits: Vec<CoefBits>,
}

/// Markers without a length field.
fn is_standalone(marker: u8) -> bool {
    matches!(marker, 0x01 | 0xD0..=0xD7 | 0xD8 | 0xD9)
}

impl<'a> Decoder<'a> {
    fn new(data: &'a [u8]) -> Decoder<'a> {
        Decoder {
            data,
            pos: 2,
            quant: [None; 4],
            huffman: Default::default(),
            restart_interval: 0,
            jfif: false,
            adobe: None,
            coef_bits: Vec::new(),
        }
    }

    /// Reads the next marker segment: `(marker, offset, body)`.
    fn next_segment(&mut self) -> Result<(u8, usize, &'a [u8]), JpegError> {
        let at = next_marker(self.data, self.pos).ok_or(JpegError::Truncated {
            offset: self.data.len(),
        })?;
        let marker = self.data[at + 1];
        if is_standalone(marker) {
            self.pos = at + 2;
            return Ok((marker, at, &[]));
        }
        let truncated = JpegError::Truncated { offset: at };
        let len_bytes = self.data.get(at + 2..at + 4).ok_or(truncated.clone())?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len < 2 {
            return Err(JpegError::BadSegment {
                segment: "marker",
                offset: at,
                reason: "length below 2",
            });
        }
        let body = self.data.get(at + 4..at + 2 + len).ok_or(truncated)?;
        self.pos = at + 2 + len;
        Ok((marker, at, body))
    }

    /// Handles the segments that may come before or between scans; `false` for the
    /// others (SOF, SOS, EOI), which the caller handles.
    fn table_segment(&mut self, marker: u8, at: usize, body: &[u8]) -> Result<bool, JpegError> {
        match marker {
            0xC4 => markers::parse_huffman_tables(body, at, &mut self.huffman)?,
            0xDB => markers::parse_quant_tables(body, at, &mut self.quant)?,
            0xDD => self.restart_interval = markers::parse_restart_interval(body, at)?,
            0xE0 => self.jfif |= markers::is_jfif(body),
            0xEE => {
                if let Some(transform) = markers::adobe_transform(body) {
                    self.adobe = Some(transform);
                }
            }
            0xCC => return Err(JpegError::Unsupported("arithmetic coding")),
            0xC0..=0xCF | 0xDA | 0xD9 => return Ok(false),
            // APPn, COM, DNL and other segments: skipped.
            _ => {}
        }
        Ok(true)
    }

    /// Reads up to and including the frame header.
    fn read_frame_header(&mut self) -> Result<Frame, JpegError> {
        loop {
            let (marker, at, body) = self.next_segment()?;
            if self.table_segment(marker, at, body)? {
                continue;
            }
            return match marker {
                0xC0 | 0xC1 => markers::parse_frame(body, at, false),
                0xC2 => markers::parse_frame(body, at, true),
                0xC3 | 0xC5..=0xC7 => Err(JpegError::Unsupported("lossless or hierarchical JPEG")),
                0xC9..=0xCB | 0xCD..=0xCF => Err(JpegError::Unsupported("arithmetic coding")),
                _ => Err(JpegError::NoImage("scan or end before the frame header")),
            };
        }
    }

    /// Reads every scan and returns the RGB8 image.
    fn decode(mut self, frame: Frame) -> Result<Decoded, JpegError> {
        let n = frame.components.len();
        // Every block of a component in the image costs at least one bit of scan data (its
        // DC code): a file far shorter than the size its header claims is refused before
        // the coefficient planes are allocated.
        let fewest_blocks = (0..n)
            .map(|c| frame.component_width(c).div_ceil(8) * frame.component_height(c).div_ceil(8))
            .min()
            .unwrap_or(0);
        if self.data.len().saturating_sub(self.pos) < fewest_blocks / 8 {
            return Err(JpegError::Truncated {
                offset: self.data.len(),
            });
        }
        let mut buffers: Vec<ComponentBuffer> = (0..n)
            .map(|c| {
                let blocks = frame.blocks_w(c) * frame.blocks_h(c);
                ComponentBuffer {
                    blocks_w: frame.blocks_w(c),
                    coefs: if frame.progressive {
                        vec![[0; 64]; blocks]
                    } else {
                        Vec::new()
                    },
                    plane: vec![0; blocks * 64],
                    quant: None,
                }
            })
            .collect();
        self.coef_bits = vec![[-1; 10]; n];
        let mut scans = 0;
        loop {
            let (marker, at, body) = self.next_segment()?;
            if self.table_segment(marker, at, body)? {
                continue;
            }
            match marker {
                0xDA => {
                    if scans == MAX_SCANS {
                        return Err(JpegError::Unsupported("more than 1000 scans"));
                    }
                    let scan = markers::parse_scan(body, at, &frame)?;
                    self.latch_quant_tables(&scan, &frame, &mut buffers)?;
                    self.pos = self.run_scan(&frame, &scan, &mut buffers)?;
                    for sc in &scan.components {
                        for k in scan.ss..=scan.se.min(9) {
                            self.coef_bits[sc.index][k] = scan.al as i32;
                        }
                    }
                    scans += 1;
                }
                0xD9 => break,
                _ => {
                    return Err(JpegError::BadSegment {
                        segment: "SOF",
                        offset: at,
                        reason: "second frame header",
                    })
                }
            }
        }
        if scans == 0 {
            return Err(JpegError::NoImage("no scan before the end of image"));
        }
        let smooth = frame.progressive && smoothing::smoothing_applies(&self.coef_bits, &buffers);
        for (c, buffer) in buffers.iter_mut().enumerate() {
            if buffer.quant.is_none() {
                // Mid-gray, as libjpeg outputs a component no scan covered.
                buffer.plane.fill(128);
            } else if smooth {
                let grid = BlockGrid {
                    width: frame.component_width(c).div_ceil(8),
                    height: frame.component_height(c).div_ceil(8),
                    v: frame.components[c].v,
                    imcu_rows: frame.mcus_y,
                };
                smoothing::smooth_and_transform(buffer, &self.coef_bits[c], &grid);
            } else if frame.progressive {
                transform_all(buffer);
            }
        }
        let planes: Vec<Vec<u8>> = buffers
            .into_iter()
            .enumerate()
            .map(|(c, buffer)| {
                let samples = Samples {
                    plane: &buffer.plane,
                    stride: buffer.blocks_w * 8,
                    width: frame.component_width(c),
                    height: frame.component_height(c),
                };
                let (h_ratio, v_ratio) = (
                    frame.h_max / frame.components[c].h,
                    frame.v_max / frame.components[c].v,
                );
                upsample::upsample(&samples, h_ratio, v_ratio, frame.width, frame.height)
            })
            .collect();
        let ids: Vec<u8> = frame.components.iter().map(|c| c.id).collect();
        let space = ColorSpace::detect(&ids, self.jfif, self.adobe);
        Ok(Decoded {
            width: frame.width,
            height: frame.height,
            rgb: color::to_rgb(space, &planes),
        })
    }

    /// Fixes each component's quantization table at its first scan, as libjpeg does.
    fn latch_quant_tables(
        &self,
        scan: &Scan,
        frame: &Frame,
        buffers: &mut [ComponentBuffer],
    ) -> Result<(), JpegError> {
        for sc in &scan.components {
            if buffers[sc.index].quant.is_none() {
                let slot = frame.components[sc.index].quant_slot;
                let table = self.quant[usize::from(slot)].ok_or(JpegError::MissingTable {
                    kind: "quantization",
                    index: slot,
                })?;
                buffers[sc.index].quant = Some(table);
            }
        }
        Ok(())
    }

    /// Decodes one scan's entropy-coded data; returns the position after it.
    fn run_scan(
        &self,
        frame: &Frame,
        scan: &Scan,
        buffers: &mut [ComponentBuffer],
    ) -> Result<usize, JpegError> {
        let table = |class: usize, slot: u8| {
            self.huffman[class][usize::from(slot)]
                .as_ref()
                .ok_or(JpegError::MissingTable {
                    kind: if class == 0 {
                        "Huffman DC"
                    } else {
                        "Huffman AC"
                    },
                    index: slot,
                })
        };
        let targets = scan.components.iter().map(|c| c.index).collect();
        if !frame.progressive {
            let tables = scan
                .components
                .iter()
                .map(|c| Ok((table(0, c.dc_slot)?, table(1, c.ac_slot)?)))
                .collect::<Result<_, JpegError>>()?;
            let mut decoder = Sequential {
                tables,
                targets,
                preds: [0; 4],
                buffers,
            };
            return decode_scan(
                self.data,
                self.pos,
                frame,
                scan,
                self.restart_interval,
                &mut decoder,
            );
        }
        let kind = match (scan.ss, scan.ah) {
            (0, 0) => ScanKind::DcFirst,
            (0, _) => ScanKind::DcRefine,
            (_, 0) => ScanKind::AcFirst,
            _ => ScanKind::AcRefine,
        };
        let tables = scan
            .components
            .iter()
            .map(|c| match kind {
                ScanKind::DcFirst => table(0, c.dc_slot).map(Some),
                ScanKind::DcRefine => Ok(None),
                ScanKind::AcFirst | ScanKind::AcRefine => table(1, c.ac_slot).map(Some),
            })
            .collect::<Result<_, JpegError>>()?;
        let mut decoder = Progressive {
            kind,
            tables,
            targets,
            band: (scan.ss, scan.se),
            al: scan.al,
            preds: [0; 4],
            eob_run: 0,
            buffers,
        };
        decode_scan(
            self.data,
            self.pos,
            frame,
            scan,
            self.restart_interval,
            &mut decoder,
        )
    }
}

/// Transforms every stored block of a progressive component.
fn transform_all(buffer: &mut ComponentBuffer) {
    let Some(quant) = buffer.quant else {
        return;
    };
    let coefs = std::mem::take(&mut buffer.coefs);
    for (i, block) in coefs.iter().enumerate() {
        buffer.idct_block(block, &quant, i % buffer.blocks_w, i / buffer.blocks_w);
    }
}
