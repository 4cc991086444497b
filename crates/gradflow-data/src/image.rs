//! Single grayscale images for prediction: PGM (P2/P5) and PNG decoding,
//! conversion to luminance in `[0, 1]`, and resizing to MNIST's 28×28.
//!
//! Images come straight from users (phone photos, paint programs), so every
//! size and length is checked before allocating, and decoding limits keep a
//! hostile header from exhausting memory.

use std::path::Path;

use crate::error::{DataError, Result};

/// Side length of the square images MNIST models expect.
pub const IMAGE_SIDE: usize = 28;

/// Largest image accepted, in pixels (4096×4096); bigger inputs are almost
/// certainly mistakes and would cost hundreds of megabytes as `f32`.
const MAX_PIXELS: usize = 1 << 24;
/// Largest image file read into memory.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// A decoded grayscale image with values in `[0, 1]` (0 = black).
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    width: usize,
    height: usize,
    pixels: Vec<f32>,
}

impl GrayImage {
    /// Wraps row-major pixels; errors if the size is zero or does not match,
    /// so every `GrayImage` can be resized and indexed safely.
    pub fn new(width: usize, height: usize, pixels: Vec<f32>) -> Result<GrayImage> {
        if width == 0 || height == 0 || width.checked_mul(height) != Some(pixels.len()) {
            return Err(DataError::InvalidArgument(format!(
                "{} pixels do not form a non-empty {width}x{height} image",
                pixels.len()
            )));
        }
        Ok(GrayImage { width, height, pixels })
    }

    /// Width in pixels (at least 1).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels (at least 1).
    pub fn height(&self) -> usize {
        self.height
    }

    /// Row-major pixel values in `[0, 1]`.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    /// Gives up the pixel buffer without copying.
    pub fn into_pixels(self) -> Vec<f32> {
        self.pixels
    }

    /// Resamples to `width`×`height` (each clamped to at least 1): area
    /// averaging along an axis that shrinks, so thin strokes are not lost,
    /// and bilinear interpolation along an axis that grows.
    pub fn resize(&self, width: usize, height: usize) -> GrayImage {
        let (width, height) = (width.max(1), height.max(1));
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let wx = axis_weights(self.width, width);
        let wy = axis_weights(self.height, height);
        // Horizontal pass: height × width.
        let mut tmp = Vec::with_capacity(self.height * width);
        for row in self.pixels.chunks_exact(self.width) {
            tmp.extend(wx.iter().map(|ws| ws.iter().map(|&(j, w)| row[j] * w).sum::<f32>()));
        }
        // Vertical pass.
        let mut out = Vec::with_capacity(width * height);
        for ws in &wy {
            for x in 0..width {
                let v: f32 = ws.iter().map(|&(j, w)| tmp[j * width + x] * w).sum();
                out.push(v.clamp(0.0, 1.0));
            }
        }
        GrayImage {
            width,
            height,
            pixels: out,
        }
    }
}

/// For each output position along one axis, the source positions and
/// weights (summing to 1) that produce it.
fn axis_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            if src == dst {
                vec![(i, 1.0)]
            } else if dst < src {
                let (start, end) = (i as f64 * scale, (i + 1) as f64 * scale);
                let first = start.floor() as usize;
                let last = (end.ceil() as usize).min(src);
                (first..last)
                    .filter_map(|j| {
                        let overlap = end.min(j as f64 + 1.0) - start.max(j as f64);
                        (overlap > 0.0).then(|| (j, (overlap / scale) as f32))
                    })
                    .collect()
            } else {
                let x = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
                let j0 = x.floor() as usize;
                let j1 = (j0 + 1).min(src - 1);
                let f = (x - j0 as f64) as f32;
                vec![(j0, 1.0 - f), (j1, f)]
            }
        })
        .collect()
}

/// Loads a PGM or PNG file as MNIST-sized input: 28×28 = 784 values in
/// `[0, 1]`, resized if needed. It does not invert; call
/// [`invert_if_light_background`] for dark-on-light drawings.
pub fn load_gray_image(path: impl AsRef<Path>) -> Result<Vec<f32>> {
    let img = decode_gray_image(path)?;
    if (img.width, img.height) == (IMAGE_SIDE, IMAGE_SIDE) {
        return Ok(img.into_pixels());
    }
    Ok(img.resize(IMAGE_SIDE, IMAGE_SIDE).into_pixels())
}

/// Decodes a PGM or PNG file at its own size (format detected by content).
pub fn decode_gray_image(path: impl AsRef<Path>) -> Result<GrayImage> {
    let path = path.as_ref();
    let source = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.is_dir() {
        return Err(DataError::format(source, "is a directory, expected an image"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(DataError::format(
            source,
            format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES}-byte limit for images",
                meta.len()
            ),
        ));
    }
    let data = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    decode_gray_image_bytes(&data, &source)
}

/// Decodes PGM or PNG bytes; `source` names them in error messages. Exists
/// for tests, fuzzing and images that do not come from files.
pub fn decode_gray_image_bytes(data: &[u8], source: &str) -> Result<GrayImage> {
    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if data.is_empty() {
        return Err(DataError::format(source, "empty file, expected a PNG or PGM image"));
    }
    if data.starts_with(PNG_SIGNATURE) {
        decode_png(data, source)
    } else if data.starts_with(b"P2") || data.starts_with(b"P5") {
        decode_pgm(data, source)
    } else {
        Err(DataError::format(
            source,
            "unsupported image format: expected PNG or PGM (P2/P5)",
        ))
    }
}

fn check_size(width: usize, height: usize, source: &str) -> Result<usize> {
    if width == 0 || height == 0 {
        return Err(DataError::format(source, format!("zero-size image {width}x{height}")));
    }
    match width.checked_mul(height) {
        Some(n) if n <= MAX_PIXELS => Ok(n),
        _ => Err(DataError::format(
            source,
            format!("image {width}x{height} is larger than the {MAX_PIXELS}-pixel limit"),
        )),
    }
}

/// Cursor over PGM header tokens, skipping whitespace and `#` comments.
struct PgmTokens<'a> {
    data: &'a [u8],
    pos: usize,
}

impl PgmTokens<'_> {
    fn skip_space(&mut self) {
        while let Some(&b) = self.data.get(self.pos) {
            if b == b'#' {
                while self.data.get(self.pos).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    self.pos += 1;
                }
            } else if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// Next unsigned decimal number, `None` at end of data, `Err` with the
    /// offending token when it is not a number.
    fn number(&mut self) -> std::result::Result<Option<u64>, String> {
        self.skip_space();
        let start = self.pos;
        while self
            .data
            .get(self.pos)
            .is_some_and(|b| !b.is_ascii_whitespace() && *b != b'#')
        {
            self.pos += 1;
        }
        if start == self.pos {
            return Ok(None);
        }
        let token = &self.data[start..self.pos];
        std::str::from_utf8(token)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| format!("'{}'", String::from_utf8_lossy(&token[..token.len().min(20)])))
    }
}

fn decode_pgm(data: &[u8], source: &str) -> Result<GrayImage> {
    let err = |m: String| DataError::format(source, m);
    let binary = data[1] == b'5';
    let mut t = PgmTokens { data, pos: 2 };
    let mut header = [0u64; 3];
    for (slot, what) in header.iter_mut().zip(["width", "height", "maxval"]) {
        *slot = t
            .number()
            .map_err(|tok| err(format!("PGM header: {what} {tok} is not a number")))?
            .ok_or_else(|| err(format!("truncated: PGM header ends before the {what}")))?;
    }
    let [w, h, maxval] = header;
    if !(1..=65535).contains(&maxval) {
        return Err(err(format!("PGM maxval {maxval} is not in 1..=65535")));
    }
    let width = usize::try_from(w).unwrap_or(usize::MAX);
    let height = usize::try_from(h).unwrap_or(usize::MAX);
    let raster = PgmRaster {
        width,
        height,
        count: check_size(width, height, source)?,
        maxval,
        source,
    };
    let pixels = if binary {
        raster.binary(data, t.pos)?
    } else {
        raster.ascii(&mut t)?
    };
    GrayImage::new(width, height, pixels).map_err(|e| err(e.to_string()))
}

/// What a PGM header declares about the pixels that follow it.
struct PgmRaster<'a> {
    width: usize,
    height: usize,
    count: usize,
    maxval: u64,
    source: &'a str,
}

impl PgmRaster<'_> {
    fn err(&self, m: String) -> DataError {
        DataError::format(self.source, m)
    }

    /// Sample `i` scaled to [0, 1], refused above maxval.
    fn scaled(&self, v: u64, i: usize) -> Result<f32> {
        if v > self.maxval {
            return Err(self.err(format!("PGM pixel {i} has value {v}, above maxval {}", self.maxval)));
        }
        Ok(v as f32 * (1.0 / self.maxval as f32))
    }

    /// P5: big-endian samples of one or two bytes, after exactly one whitespace byte at `pos`.
    fn binary(&self, data: &[u8], pos: usize) -> Result<Vec<f32>> {
        if !data.get(pos).is_some_and(u8::is_ascii_whitespace) {
            return Err(self.err("truncated: P5 header is not followed by pixel data".into()));
        }
        let raster = &data[pos + 1..];
        let bytes_per = if self.maxval < 256 { 1 } else { 2 };
        let need = self.count * bytes_per;
        if raster.len() < need {
            return Err(self.err(format!(
                "truncated: P5 header says {}x{} ({need} bytes of pixels) but only {} follow",
                self.width,
                self.height,
                raster.len()
            )));
        }
        let mut pixels = Vec::with_capacity(self.count);
        for (i, px) in raster[..need].chunks_exact(bytes_per).enumerate() {
            pixels.push(self.scaled(px.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)), i)?);
        }
        Ok(pixels)
    }

    /// P2: decimal samples separated by whitespace.
    fn ascii(&self, t: &mut PgmTokens) -> Result<Vec<f32>> {
        let count = self.count;
        // Each ASCII sample takes at least one digit plus a separator, which
        // bounds the count by the data actually present.
        let remaining = t.data.len() - t.pos;
        if count > remaining / 2 + 1 {
            return Err(self.err(format!(
                "truncated: P2 header says {}x{} ({count} pixels) but only {remaining} bytes follow",
                self.width, self.height
            )));
        }
        let mut pixels = Vec::with_capacity(count);
        for i in 0..count {
            let v = t
                .number()
                .map_err(|tok| self.err(format!("PGM pixel {i}: {tok} is not a number")))?
                .ok_or_else(|| {
                    self.err(format!(
                        "truncated: P2 header says {count} pixels but the file holds only {i}"
                    ))
                })?;
            pixels.push(self.scaled(v, i)?);
        }
        Ok(pixels)
    }
}

fn decode_png(data: &[u8], source: &str) -> Result<GrayImage> {
    let err = |m: String| DataError::format(source, m);
    let mut decoder = png::Decoder::new(data);
    // EXPAND turns palettes into RGB(A), low bit depths into 8 bits and
    // tRNS chunks into an alpha channel, leaving only 8/16-bit layouts.
    decoder.set_transformations(png::Transformations::EXPAND);
    decoder.set_limits(png::Limits { bytes: MAX_PIXELS * 8 });
    let mut reader = decoder.read_info().map_err(|e| png_error(source, e))?;
    {
        let info = reader.info();
        check_size(info.width as usize, info.height as usize, source)?;
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(|e| png_error(source, e))?;
    let (width, height) = (frame.width as usize, frame.height as usize);
    let count = check_size(width, height, source)?;
    let (channels, bytes_per) = png_layout(&frame, source)?;
    let row_bytes = width * channels * bytes_per;
    if frame.line_size < row_bytes || buf.len() < frame.line_size * height {
        return Err(err("truncated: PNG frame is smaller than its header says".into()));
    }
    let sample = |b: &[u8]| -> f32 {
        if bytes_per == 1 {
            f32::from(b[0]) / 255.0
        } else {
            f32::from(u16::from_be_bytes([b[0], b[1]])) / 65535.0
        }
    };
    let mut pixels = Vec::with_capacity(count);
    for row in buf.chunks_exact(frame.line_size).take(height) {
        for px in row[..row_bytes].chunks_exact(channels * bytes_per) {
            let mut c = [0f32; 4];
            for (slot, b) in c.iter_mut().zip(px.chunks_exact(bytes_per)) {
                *slot = sample(b);
            }
            let (lum, alpha) = match channels {
                1 => (c[0], 1.0),
                2 => (c[0], c[1]),
                3 => (luminance(c[0], c[1], c[2]), 1.0),
                _ => (luminance(c[0], c[1], c[2]), c[3]),
            };
            // Transparent areas are composited over white, as viewers show
            // them; a light background is then handled by inversion.
            pixels.push((lum * alpha + (1.0 - alpha)).clamp(0.0, 1.0));
        }
    }
    GrayImage::new(width, height, pixels).map_err(|e| err(e.to_string()))
}

/// Samples per pixel and bytes per sample of an expanded PNG frame.
fn png_layout(frame: &png::OutputInfo, source: &str) -> Result<(usize, usize)> {
    let err = |m: String| DataError::format(source, m);
    let channels = match frame.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(err("unsupported PNG: palette was not expanded".into()));
        }
    };
    let bytes_per = match frame.bit_depth {
        png::BitDepth::Eight => 1,
        png::BitDepth::Sixteen => 2,
        other => return Err(err(format!("unsupported PNG bit depth {other:?}"))),
    };
    Ok((channels, bytes_per))
}

/// ITU-R BT.601 luma, the weighting most grayscale conversions use.
fn luminance(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

fn png_error(source: &str, e: png::DecodingError) -> DataError {
    let msg = match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated PNG data".to_string()
        }
        png::DecodingError::LimitsExceeded => "PNG image is too large to decode".to_string(),
        other => format!("invalid PNG: {other}"),
    };
    DataError::format(source, msg)
}

/// MNIST digits are white strokes on black; photos and drawings are usually
/// dark on light. If the mean of the border pixels is above 0.5 this inverts
/// every pixel (`x -> 1 - x`) and returns `true`. Returns `false` and leaves
/// the data alone when `pixels` is not a non-empty `width`×`height` image.
pub fn invert_if_light_background(pixels: &mut [f32], width: usize, height: usize) -> bool {
    if width == 0 || height == 0 || width.checked_mul(height) != Some(pixels.len()) {
        return false;
    }
    let mut sum = 0.0f64;
    let mut n = 0usize;
    for y in 0..height {
        let row = &pixels[y * width..(y + 1) * width];
        if y == 0 || y == height - 1 {
            sum += row.iter().map(|&v| f64::from(v)).sum::<f64>();
            n += width;
        } else {
            sum += f64::from(row[0]);
            n += 1;
            if width > 1 {
                sum += f64::from(row[width - 1]);
                n += 1;
            }
        }
    }
    if sum / n as f64 > 0.5 {
        pixels.iter_mut().for_each(|v| *v = 1.0 - *v);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(
        w: u32,
        h: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
        palette: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(color);
            enc.set_depth(depth);
            if let Some(p) = palette {
                enc.set_palette(p.to_vec());
            }
            let mut writer = enc.write_header().unwrap();
            writer.write_image_data(data).unwrap();
        }
        out
    }

    fn decode(data: &[u8]) -> GrayImage {
        decode_gray_image_bytes(data, "mem").unwrap()
    }

    fn err(data: &[u8]) -> String {
        decode_gray_image_bytes(data, "img").unwrap_err().to_string()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-3)
    }

    #[test]
    fn pgm_ascii_with_comments_and_binary_8_and_16_bit() {
        let img = decode(b"P2\n# made by hand\n3 2 # w h\n15\n0 15 5\n10\n 3 0\n");
        assert_eq!((img.width(), img.height()), (3, 2));
        assert!(close(img.pixels(), &[0.0, 1.0, 5.0 / 15.0, 10.0 / 15.0, 0.2, 0.0]));

        let mut p5 = b"P5 2 1 255\n".to_vec();
        p5.extend_from_slice(&[0, 255]);
        assert_eq!(decode(&p5).pixels(), &[0.0, 1.0]);

        let mut p16 = b"P5\n2 1\n65535\n".to_vec();
        p16.extend_from_slice(&[0xff, 0xff, 0x80, 0x00]);
        assert!(close(decode(&p16).pixels(), &[1.0, 32768.0 / 65535.0]));
    }

    #[test]
    fn pgm_errors_name_the_cause() {
        assert!(err(b"P2 0 3 255\n").contains("zero-size"));
        assert!(err(b"P2 2 2 0\n").contains("maxval 0"));
        assert!(err(b"P2 2 2 70000\n").contains("maxval"));
        assert!(err(b"P2 2 1 9 3 10\n").contains("above maxval"));
        assert!(err(b"P2 2 1 9 3 x\n").contains("not a number"));
        assert!(err(b"P2 2 2 9 1 2 3\n").contains("truncated"));
        assert!(err(b"P5 2 2 255\n\x00\x01").contains("truncated"));
        assert!(err(b"P5 2 2").contains("truncated"));
        assert!(err(b"P2 60000 60000 255 0\n").contains("limit"));
        assert!(err(b"P2 4000 4000 255 0 0\n").contains("truncated"));
        assert!(err(b"GIF89a").contains("unsupported image format"));
        assert!(err(b"").contains("empty"));
    }

    #[test]
    fn png_color_types_and_depths_become_luminance() {
        use png::{BitDepth::*, ColorType::*};
        let g8 = decode(&png_bytes(2, 1, Grayscale, Eight, &[0, 255], None));
        assert_eq!(g8.pixels(), &[0.0, 1.0]);
        let g16 = decode(&png_bytes(1, 1, Grayscale, Sixteen, &[0x80, 0x00], None));
        assert!(close(g16.pixels(), &[32768.0 / 65535.0]));
        // 1-bit gray: 0b1000_0000 -> white, black.
        let g1 = decode(&png_bytes(2, 1, Grayscale, One, &[0b1000_0000], None));
        assert_eq!(g1.pixels(), &[1.0, 0.0]);
        let rgb = decode(&png_bytes(2, 1, Rgb, Eight, &[255, 0, 0, 255, 255, 255], None));
        assert!(close(rgb.pixels(), &[0.299, 1.0]));
        // Transparent black composites to white; opaque black stays black.
        let rgba = decode(&png_bytes(2, 1, Rgba, Eight, &[0, 0, 0, 0, 0, 0, 0, 255], None));
        assert_eq!(rgba.pixels(), &[1.0, 0.0]);
        let ga = decode(&png_bytes(1, 1, GrayscaleAlpha, Eight, &[0, 128], None));
        assert!(close(ga.pixels(), &[1.0 - 128.0 / 255.0]));
        let rgb16 = decode(&png_bytes(
            1,
            1,
            Rgb,
            Sixteen,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            None,
        ));
        assert!(close(rgb16.pixels(), &[1.0]));
        let pal = [0, 0, 0, 255, 255, 255];
        let idx = decode(&png_bytes(2, 1, Indexed, Eight, &[1, 0], Some(&pal)));
        assert_eq!(idx.pixels(), &[1.0, 0.0]);
    }

    #[test]
    fn png_truncated_and_corrupt_are_errors() {
        let good = png_bytes(4, 4, png::ColorType::Grayscale, png::BitDepth::Eight, &[7; 16], None);
        let e = err(&good[..good.len() / 2]);
        assert!(e.starts_with("img: ") && e.contains("PNG"), "{e}");
        let e = err(&good[..12]);
        assert!(e.starts_with("img: "), "{e}");
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 20] ^= 0xff;
        assert!(decode_gray_image_bytes(&bad, "x").is_err());
    }

    #[test]
    fn resize_area_averages_when_shrinking_and_interpolates_when_growing() {
        // 56x56 checkerboard of 2x2 blocks {0,1,1,0} averages to 0.5.
        let px: Vec<f32> = (0..56 * 56).map(|i| ((i % 56 + i / 56) % 2) as f32).collect();
        let small = GrayImage::new(56, 56, px).unwrap().resize(28, 28);
        assert_eq!(small.pixels().len(), 784);
        assert!(small.pixels().iter().all(|&v| (v - 0.5).abs() < 1e-5));
        // A horizontal ramp stays monotonic and in range when enlarged.
        let ramp = GrayImage::new(2, 1, vec![0.0, 1.0]).unwrap().resize(4, 3);
        assert!(close(&ramp.pixels()[..4], &[0.0, 0.25, 0.75, 1.0]));
        assert_eq!(ramp.pixels().len(), 12);
        // Odd ratios keep a constant image constant.
        let c = GrayImage::new(37, 19, vec![0.3; 37 * 19]).unwrap().resize(28, 28);
        assert!(c.pixels().iter().all(|&v| (v - 0.3).abs() < 1e-5));
        assert!(GrayImage::new(2, 2, vec![0.0; 3]).is_err());
    }

    #[test]
    fn load_gray_image_resizes_files_to_784_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("digit.png");
        let data: Vec<u8> = (0..40 * 30).map(|i| (i % 256) as u8).collect();
        std::fs::write(
            &p,
            png_bytes(40, 30, png::ColorType::Grayscale, png::BitDepth::Eight, &data, None),
        )
        .unwrap();
        let v = load_gray_image(&p).unwrap();
        assert_eq!(v.len(), IMAGE_SIDE * IMAGE_SIDE);
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
        let q = dir.path().join("same.pgm");
        let mut pgm = b"P5 28 28 255\n".to_vec();
        pgm.extend((0..784).map(|i| (i % 256) as u8));
        std::fs::write(&q, &pgm).unwrap();
        let v = load_gray_image(&q).unwrap();
        assert_eq!(v[300], (300 % 256) as f32 / 255.0);
        let e = load_gray_image(dir.path().join("none.png")).unwrap_err();
        assert!(e.to_string().contains("none.png"));
        assert!(load_gray_image(dir.path()).is_err());
    }

    #[test]
    fn inversion_follows_the_border() {
        let mut light = vec![1.0; 9];
        light[4] = 0.0;
        assert!(invert_if_light_background(&mut light, 3, 3));
        assert_eq!(light[4], 1.0);
        assert_eq!(light[0], 0.0);
        let mut dark = vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        assert!(!invert_if_light_background(&mut dark, 3, 3));
        assert_eq!(dark[4], 1.0);
        assert!(!invert_if_light_background(&mut [1.0; 3], 2, 2));
        assert!(invert_if_light_background(&mut [1.0], 1, 1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn decoder_never_panics(
            kind in 0usize..3,
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
        ) {
            let prefix: &[u8] = [&b"P2 "[..], b"P5 ", b"\x89PNG\r\n\x1a\n"][kind];
            let mut data = prefix.to_vec();
            data.extend_from_slice(&tail);
            let _ = decode_gray_image_bytes(&data, "fuzz");
        }

        #[test]
        fn resize_always_gives_requested_size(
            w in 1usize..40, h in 1usize..40, nw in 1usize..40, nh in 1usize..40,
        ) {
            let img = GrayImage::new(w, h, vec![0.5; w * h]).unwrap().resize(nw, nh);
            proptest::prop_assert_eq!(img.pixels().len(), nw * nh);
            proptest::prop_assert!(img.pixels().iter().all(|&v| (v - 0.5).abs() < 1e-4));
        }
    }
}
