//! Marker segments: the frame header (SOF), scan headers (SOS), quantization (DQT)
//! and Huffman (DHT) tables, the restart interval (DRI), and the JFIF / Adobe
//! markers that decide the color space. Each parser gets the segment body (after
//! the length) and the offset of its marker for error messages.

use super::error::JpegError;
use super::huffman::HuffmanTable;

/// Zigzag index -> natural (row-major) index of an 8x8 block.
pub(super) const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Most blocks in one MCU of an interleaved scan (libjpeg's `D_MAX_BLOCKS_IN_MCU`).
const MAX_BLOCKS_IN_MCU: usize = 10;

/// One image component of the frame.
#[derive(Clone, Debug)]
pub(super) struct Component {
    /// Component identifier (`C`).
    pub id: u8,
    /// Horizontal sampling factor (1..=4).
    pub h: usize,
    /// Vertical sampling factor (1..=4).
    pub v: usize,
    /// Quantization table slot (0..=3).
    pub quant_slot: u8,
}

/// The frame header.
#[derive(Clone, Debug)]
pub(super) struct Frame {
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// SOF2 (progressive) rather than SOF0/SOF1 (sequential).
    pub progressive: bool,
    /// The components in frame order.
    pub components: Vec<Component>,
    /// Largest horizontal sampling factor.
    pub h_max: usize,
    /// Largest vertical sampling factor.
    pub v_max: usize,
    /// MCUs per row of an interleaved scan.
    pub mcus_x: usize,
    /// MCU rows of an interleaved scan.
    pub mcus_y: usize,
}

impl Frame {
    /// Width of component `c` in samples (libjpeg's `downsampled_width`).
    pub fn component_width(&self, c: usize) -> usize {
        (self.width * self.components[c].h).div_ceil(self.h_max)
    }

    /// Height of component `c` in samples (libjpeg's `downsampled_height`).
    pub fn component_height(&self, c: usize) -> usize {
        (self.height * self.components[c].v).div_ceil(self.v_max)
    }

    /// Blocks per row stored for component `c` (whole MCUs).
    pub fn blocks_w(&self, c: usize) -> usize {
        self.mcus_x * self.components[c].h
    }

    /// Block rows stored for component `c` (whole MCUs).
    pub fn blocks_h(&self, c: usize) -> usize {
        self.mcus_y * self.components[c].v
    }
}

/// One component of a scan.
#[derive(Clone, Copy, Debug)]
pub(super) struct ScanComponent {
    /// Index into [`Frame::components`].
    pub index: usize,
    /// DC Huffman table slot.
    pub dc_slot: u8,
    /// AC Huffman table slot.
    pub ac_slot: u8,
}

/// A scan header.
#[derive(Clone, Debug)]
pub(super) struct Scan {
    /// The components coded in this scan, in scan order.
    pub components: Vec<ScanComponent>,
    /// First coefficient (zigzag index) of the spectral band.
    pub ss: usize,
    /// Last coefficient of the band.
    pub se: usize,
    /// Successive approximation: bit position of the previous scan (0 = first).
    pub ah: u32,
    /// Successive approximation: bit position of this scan.
    pub al: u32,
}

fn bad(segment: &'static str, offset: usize, reason: &'static str) -> JpegError {
    JpegError::BadSegment {
        segment,
        offset,
        reason,
    }
}

/// Parses an SOF0/SOF1/SOF2 body.
pub(super) fn parse_frame(
    body: &[u8],
    offset: usize,
    progressive: bool,
) -> Result<Frame, JpegError> {
    let err = |reason| bad("SOF", offset, reason);
    if body.len() < 6 {
        return Err(err("too short"));
    }
    if body[0] != 8 {
        return Err(JpegError::Unsupported("sample precision other than 8 bits"));
    }
    let height = usize::from(u16::from_be_bytes([body[1], body[2]]));
    let width = usize::from(u16::from_be_bytes([body[3], body[4]]));
    let count = usize::from(body[5]);
    if height == 0 {
        return Err(JpegError::Unsupported(
            "height defined by a DNL marker (0 in SOF)",
        ));
    }
    if width == 0 {
        return Err(err("zero width"));
    }
    if count == 0 {
        return Err(err("no components"));
    }
    if body.len() != 6 + 3 * count {
        return Err(err("length does not match the component count"));
    }
    let mut components = Vec::with_capacity(count);
    for c in body[6..].chunks_exact(3) {
        let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(err("sampling factor outside 1..=4"));
        }
        if c[2] > 3 {
            return Err(err("quantization table slot above 3"));
        }
        if components.iter().any(|k: &Component| k.id == c[0]) {
            return Err(err("duplicate component id"));
        }
        components.push(Component {
            id: c[0],
            h,
            v,
            quant_slot: c[2],
        });
    }
    if !matches!(count, 1 | 3 | 4) {
        return Err(JpegError::Unsupported(
            "component count other than 1, 3 or 4",
        ));
    }
    let h_max = components.iter().map(|c| c.h).max().unwrap_or(1);
    let v_max = components.iter().map(|c| c.v).max().unwrap_or(1);
    for c in &components {
        if h_max % c.h != 0 || v_max % c.v != 0 {
            return Err(JpegError::Unsupported("fractional sampling ratios"));
        }
    }
    Ok(Frame {
        width,
        height,
        progressive,
        mcus_x: width.div_ceil(8 * h_max),
        mcus_y: height.div_ceil(8 * v_max),
        components,
        h_max,
        v_max,
    })
}

/// Parses a DQT body into `tables` (natural order).
pub(super) fn parse_quant_tables(
    mut body: &[u8],
    offset: usize,
    tables: &mut [Option<[u16; 64]>; 4],
) -> Result<(), JpegError> {
    while let Some((&pq_tq, rest)) = body.split_first() {
        let (precision, slot) = (pq_tq >> 4, usize::from(pq_tq & 15));
        if slot > 3 {
            return Err(bad("DQT", offset, "table slot above 3"));
        }
        let size = match precision {
            0 => 64,
            1 => 128,
            _ => return Err(bad("DQT", offset, "precision other than 8 or 16 bits")),
        };
        let values = rest
            .get(..size)
            .ok_or_else(|| bad("DQT", offset, "table runs past the segment"))?;
        let mut table = [0u16; 64];
        for (k, &natural) in ZIGZAG.iter().enumerate() {
            table[natural] = if precision == 0 {
                u16::from(values[k])
            } else {
                u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
            };
        }
        tables[slot] = Some(table);
        body = &rest[size..];
    }
    Ok(())
}

/// Huffman tables by class: `[dc, ac]`, four slots each.
pub(super) type HuffmanSlots = [[Option<HuffmanTable>; 4]; 2];

/// Parses a DHT body into `tables`.
pub(super) fn parse_huffman_tables(
    mut body: &[u8],
    offset: usize,
    tables: &mut HuffmanSlots,
) -> Result<(), JpegError> {
    while !body.is_empty() {
        if body.len() < 17 {
            return Err(bad("DHT", offset, "table header runs past the segment"));
        }
        let (class, slot) = (usize::from(body[0] >> 4), usize::from(body[0] & 15));
        if class > 1 || slot > 3 {
            return Err(bad("DHT", offset, "table class above 1 or slot above 3"));
        }
        let mut counts = [0u8; 16];
        counts.copy_from_slice(&body[1..17]);
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let values = body
            .get(17..17 + total)
            .ok_or_else(|| bad("DHT", offset, "symbols run past the segment"))?;
        if class == 0 && values.iter().any(|&v| v > 15) {
            return Err(bad("DHT", offset, "DC symbol above 15"));
        }
        let table = HuffmanTable::new(&counts, values)
            .ok_or_else(|| bad("DHT", offset, "code lengths overflow"))?;
        tables[class][slot] = Some(table);
        body = &body[17 + total..];
    }
    Ok(())
}

/// Parses an SOS body against the frame.
pub(super) fn parse_scan(body: &[u8], offset: usize, frame: &Frame) -> Result<Scan, JpegError> {
    let err = |reason| bad("SOS", offset, reason);
    let count = usize::from(*body.first().ok_or_else(|| err("empty"))?);
    if !(1..=4).contains(&count) || body.len() != 4 + 2 * count {
        return Err(err("bad component count or length"));
    }
    let mut components: Vec<ScanComponent> = Vec::with_capacity(count);
    for c in body[1..1 + 2 * count].chunks_exact(2) {
        let index = frame
            .components
            .iter()
            .position(|k| k.id == c[0])
            .ok_or_else(|| err("component not in the frame"))?;
        if components.iter().any(|k| k.index == index) {
            return Err(err("component repeated"));
        }
        let (dc_slot, ac_slot) = (c[1] >> 4, c[1] & 15);
        if dc_slot > 3 || ac_slot > 3 {
            return Err(err("Huffman table slot above 3"));
        }
        components.push(ScanComponent {
            index,
            dc_slot,
            ac_slot,
        });
    }
    let tail = &body[1 + 2 * count..];
    let (ss, se) = (usize::from(tail[0]), usize::from(tail[1]));
    let (ah, al) = (u32::from(tail[2] >> 4), u32::from(tail[2] & 15));
    if count > 1 {
        let blocks: usize = components
            .iter()
            .map(|k| frame.components[k.index].h * frame.components[k.index].v)
            .sum();
        if blocks > MAX_BLOCKS_IN_MCU {
            return Err(err("more than 10 blocks per MCU"));
        }
    }
    if frame.progressive {
        let bad_band = if ss == 0 {
            se != 0
        } else {
            se < ss || se > 63 || count != 1
        };
        if bad_band || ah > 13 || al > 13 || (ah != 0 && al + 1 != ah) {
            return Err(err("bad progression parameters"));
        }
    }
    // Sequential scans ignore Ss/Se/Ah/Al (libjpeg only warns about odd values).
    Ok(Scan {
        components,
        ss,
        se,
        ah,
        al,
    })
}

/// Parses a DRI body: the restart interval in MCUs (0 = none).
pub(super) fn parse_restart_interval(body: &[u8], offset: usize) -> Result<usize, JpegError> {
    match body {
        [hi, lo] => Ok(usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => Err(bad("DRI", offset, "length is not 4")),
    }
}

/// The Adobe APP14 color transform flag (0 = none/RGB/CMYK, 1 = YCbCr, 2 = YCCK),
/// if `body` is an Adobe segment.
pub(super) fn adobe_transform(body: &[u8]) -> Option<u8> {
    (body.len() >= 12 && body.starts_with(b"Adobe")).then(|| body[11])
}

/// Whether an APP0 body is a JFIF header (libjpeg wants its 14 bytes).
pub(super) fn is_jfif(body: &[u8]) -> bool {
    body.len() >= 14 && body.starts_with(b"JFIF\0")
}
