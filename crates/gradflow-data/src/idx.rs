//! Reader for the IDX format that MNIST ships in, raw or gzip-compressed.
//!
//! Headers are untrusted: a corrupt or hostile file may claim billions of
//! items. Everything here validates the header against the bytes that are
//! really there *before* allocating, so a bad file costs an error message, not
//! an out-of-memory abort.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

/// Magic number of an IDX file holding unsigned-byte images (3 dimensions).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file holding unsigned-byte labels (1 dimension).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Upper bound on the DEFLATE expansion ratio (the format's maximum is about
/// 1032:1); used only to cap a capacity *hint*, never to trust a header.
const MAX_GZIP_RATIO: u64 = 1100;

/// A block of same-sized grayscale images, exactly as stored in the file.
///
/// Pixels stay `u8` so callers choose their own scaling; MNIST scaling to
/// `[0, 1]` happens in [`crate::mnist`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Height of every image in pixels.
    pub rows: usize,
    /// Width of every image in pixels.
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Pixels of image `index`, or `None` past the end, so callers can look
    /// at single images without doing stride arithmetic.
    pub fn image(&self, index: usize) -> Option<&[u8]> {
        let len = self.rows * self.cols;
        let start = index.checked_mul(len)?;
        self.pixels.get(start..start.checked_add(len)?)
    }
}

/// Which of the two IDX layouts we expect; drives magic and header checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Images,
    Labels,
}

impl Kind {
    fn magic(self) -> u32 {
        match self {
            Kind::Images => IDX_IMAGES_MAGIC,
            Kind::Labels => IDX_LABELS_MAGIC,
        }
    }
    fn header_len(self) -> usize {
        match self {
            Kind::Images => 16,
            Kind::Labels => 8,
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Kind::Images => "IDX images",
            Kind::Labels => "IDX labels",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Labels => "labels",
        }
    }
}

/// Decoded header: item count, per-item shape and payload size.
struct Header {
    count: usize,
    rows: usize,
    cols: usize,
    payload: u64,
}

/// Reads an IDX image file (magic `0x00000803`), raw or gzip (detected by
/// content, not by the file name).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let (h, pixels) = read_file(path.as_ref(), Kind::Images)?;
    Ok(IdxImages {
        count: h.count,
        rows: h.rows,
        cols: h.cols,
        pixels,
    })
}

/// Reads an IDX label file (magic `0x00000801`), raw or gzip (detected by
/// content, not by the file name).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    read_file(path.as_ref(), Kind::Labels).map(|(_, labels)| labels)
}

/// Parses IDX images from memory; `source` names the data in error messages.
/// Exists so fuzzers and tests can exercise the parser without files.
pub fn parse_idx_images_bytes(data: &[u8], source: &str) -> Result<IdxImages> {
    let (h, pixels) = parse_bytes(data, source, Kind::Images)?;
    Ok(IdxImages {
        count: h.count,
        rows: h.rows,
        cols: h.cols,
        pixels,
    })
}

/// Parses IDX labels from memory; `source` names the data in error messages.
pub fn parse_idx_labels_bytes(data: &[u8], source: &str) -> Result<Vec<u8>> {
    parse_bytes(data, source, Kind::Labels).map(|(_, labels)| labels)
}

fn is_gzip(prefix: &[u8]) -> bool {
    prefix.starts_with(&[0x1f, 0x8b])
}

fn parse_bytes(data: &[u8], source: &str, kind: Kind) -> Result<(Header, Vec<u8>)> {
    if is_gzip(data) {
        let bound = (data.len() as u64).saturating_mul(MAX_GZIP_RATIO);
        read_stream(MultiGzDecoder::new(data), source, kind, None, bound)
    } else {
        read_stream(data, source, kind, Some(data.len() as u64), u64::MAX)
    }
}

fn read_file(path: &Path, kind: Kind) -> Result<(Header, Vec<u8>)> {
    let source = path.display().to_string();
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let meta = file.metadata().map_err(|e| DataError::io(path, e))?;
    if meta.is_dir() {
        return Err(DataError::format(source, "is a directory, expected an IDX file"));
    }
    let mut prefix = [0u8; 2];
    let got = read_full(&mut file, &mut prefix).map_err(|e| DataError::io(path, e))?;
    let gzip = is_gzip(&prefix[..got]);
    // Only a regular file's metadata length can be trusted to be the number
    // of bytes we will read, and only it can seek; pipes and devices are
    // streamed with the peeked bytes put back in front.
    let (reader, known): (Box<dyn Read>, Option<u64>) = if meta.is_file() {
        file.seek(SeekFrom::Start(0)).map_err(|e| DataError::io(path, e))?;
        (Box::new(file), Some(meta.len()))
    } else {
        let prefix = std::io::Cursor::new(prefix[..got].to_vec());
        (Box::new(prefix.chain(file)), None)
    };
    if gzip {
        let bound = meta.len().saturating_mul(MAX_GZIP_RATIO);
        let reader = MultiGzDecoder::new(BufReader::new(reader));
        read_stream(reader, &source, kind, None, bound)
    } else {
        read_stream(reader, &source, kind, known, u64::MAX)
    }
}

/// Like `read_exact` but reports how much was read instead of failing at EOF.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Maps a read error to a message that names the source; decompression
/// failures are format problems, not OS problems.
fn stream_error(source: &str, e: std::io::Error) -> DataError {
    match e.kind() {
        ErrorKind::InvalidInput | ErrorKind::InvalidData => {
            DataError::format(source, format!("corrupt gzip data: {e}"))
        }
        ErrorKind::UnexpectedEof => DataError::format(source, format!("truncated gzip data: {e}")),
        _ => DataError::format(source, format!("read failed: {e}")),
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn check_magic(magic: u32, source: &str, kind: Kind) -> Result<()> {
    if magic == kind.magic() {
        return Ok(());
    }
    Err(DataError::format(
        source,
        format!(
            "bad magic number 0x{magic:08x}, expected 0x{:08x} ({})",
            kind.magic(),
            kind.describe()
        ),
    ))
}

fn parse_header(buf: &[u8], source: &str, kind: Kind) -> Result<Header> {
    check_magic(be_u32(&buf[0..4]), source, kind)?;
    let count = be_u32(&buf[4..8]);
    let (rows, cols) = match kind {
        Kind::Labels => (1, 1),
        Kind::Images => (be_u32(&buf[8..12]), be_u32(&buf[12..16])),
    };
    if rows == 0 || cols == 0 {
        return Err(DataError::format(
            source,
            format!("invalid image size {rows}x{cols} in header: rows and columns must be non-zero"),
        ));
    }
    let payload = u64::from(count)
        .checked_mul(u64::from(rows))
        .and_then(|v| v.checked_mul(u64::from(cols)))
        // Vec cannot hold more than isize::MAX bytes; the bound also keeps
        // `payload + header_len` from overflowing.
        .filter(|&v| v <= isize::MAX as u64 && usize::try_from(v).is_ok())
        .ok_or_else(|| {
            DataError::format(
                source,
                format!("header says {count} images of {rows}x{cols}, which overflows the address space"),
            )
        })?;
    let to_usize = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
    Ok(Header {
        count: to_usize(count),
        rows: to_usize(rows),
        cols: to_usize(cols),
        payload,
    })
}

fn truncated(source: &str, kind: Kind, h: &Header, holds: u64, what: &str) -> DataError {
    let expected = h.payload + kind.header_len() as u64;
    let shape = match kind {
        Kind::Images => format!("{}x{}, ", h.rows, h.cols),
        Kind::Labels => String::new(),
    };
    DataError::format(
        source,
        format!(
            "truncated: header says {} {} ({shape}{expected} bytes) but the file holds only {holds} bytes{what}",
            h.count,
            kind.noun()
        ),
    )
}

fn trailing(source: &str, kind: Kind, h: &Header, holds: Option<u64>, what: &str) -> DataError {
    let expected = h.payload + kind.header_len() as u64;
    let holds = match holds {
        Some(n) => format!("{n} bytes"),
        None => "more".to_string(),
    };
    DataError::format(
        source,
        format!(
            "trailing data: header says {} {} ({expected} bytes) but the file holds {holds}{what}",
            h.count,
            kind.noun()
        ),
    )
}

/// Core reader over the *decompressed* byte stream.
///
/// `known_len` is the exact stream length when it is known up front (raw
/// files); then the header is checked against it before allocating. Otherwise
/// the payload is read through `take(expected + 1)` into a vector that only
/// grows with data actually present, with an initial capacity of at most
/// `capacity_bound`.
fn read_stream<R: Read>(
    mut r: R,
    source: &str,
    kind: Kind,
    known_len: Option<u64>,
    capacity_bound: u64,
) -> Result<(Header, Vec<u8>)> {
    // Suffix for length messages, so gzip users know the sizes are not
    // those `ls` shows.
    let what = if known_len.is_some() {
        ""
    } else {
        " after decompression"
    };
    let h = read_header(&mut r, source, kind, what)?;
    let data = match known_len {
        Some(len) => read_known_payload(r, source, kind, &h, len)?,
        None => read_streamed_payload(r, source, kind, &h, capacity_bound)?,
    };
    Ok((h, data))
}

/// The header, with the magic checked before the length: a wrong file type is the more useful message.
fn read_header<R: Read>(r: &mut R, source: &str, kind: Kind, what: &str) -> Result<Header> {
    let mut header = [0u8; 16];
    let header = &mut header[..kind.header_len()];
    let got = read_full(r, header).map_err(|e| stream_error(source, e))?;
    if got < 4 {
        return Err(DataError::format(
            source,
            format!(
                "truncated: the file holds only {got} bytes{what}, too short for an {} header",
                kind.describe()
            ),
        ));
    }
    check_magic(be_u32(&header[0..4]), source, kind)?;
    if got < header.len() {
        return Err(DataError::format(
            source,
            format!(
                "truncated: the file holds only {got} bytes{what}, an {} header needs {}",
                kind.describe(),
                kind.header_len()
            ),
        ));
    }
    parse_header(header, source, kind)
}

/// The payload of a stream of known length `len`, checked against the header before allocating.
fn read_known_payload<R: Read>(mut r: R, source: &str, kind: Kind, h: &Header, len: u64) -> Result<Vec<u8>> {
    let expected = h.payload + kind.header_len() as u64;
    if len < expected {
        return Err(truncated(source, kind, h, len, ""));
    }
    if len > expected {
        return Err(trailing(source, kind, h, Some(len), ""));
    }
    // The length check above proves the bytes exist, so this allocation
    // is bounded by the input size.
    let mut data = vec![0u8; h.payload as usize];
    let n = read_full(&mut r, &mut data).map_err(|e| stream_error(source, e))?;
    if (n as u64) < h.payload {
        return Err(truncated(source, kind, h, n as u64 + kind.header_len() as u64, ""));
    }
    Ok(data)
}

/// The payload of a decompressed stream, read through `take(payload + 1)` so
/// the vector only grows with data actually present.
fn read_streamed_payload<R: Read>(
    mut r: R,
    source: &str,
    kind: Kind,
    h: &Header,
    capacity_bound: u64,
) -> Result<Vec<u8>> {
    let what = " after decompression";
    let capacity = h.payload.min(capacity_bound).min(1 << 30) as usize;
    let mut data = Vec::with_capacity(capacity);
    r.by_ref()
        .take(h.payload + 1)
        .read_to_end(&mut data)
        .map_err(|e| stream_error(source, e))?;
    let n = data.len() as u64;
    if n < h.payload {
        return Err(truncated(source, kind, h, n + kind.header_len() as u64, what));
    }
    if n > h.payload {
        return Err(trailing(source, kind, h, None, what));
    }
    Ok(data)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Builds an IDX image file in memory.
    pub(crate) fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IDX_IMAGES_MAGIC, count, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    /// Builds an IDX label file in memory.
    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&IDX_LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn write(dir: &tempfile::TempDir, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn raw_and_gzip_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let img = idx_images(2, 3, 4, &pixels);
        // Deliberately misleading names: detection is by content.
        for (name, data) in [("raw.gz", img.clone()), ("packed", gzip(&img))] {
            let got = read_idx_images(write(&dir, name, &data)).unwrap();
            assert_eq!((got.count, got.rows, got.cols), (2, 3, 4));
            assert_eq!(got.pixels, pixels);
            assert_eq!(got.image(1).unwrap()[0], 12);
            assert_eq!(got.image(2), None);
        }
        let lab = idx_labels(&[3, 1, 4]);
        assert_eq!(read_idx_labels(write(&dir, "l", &lab)).unwrap(), [3, 1, 4]);
        let l_gz = write(&dir, "l.gz", &gzip(&lab));
        assert_eq!(read_idx_labels(l_gz).unwrap(), [3, 1, 4]);
    }

    #[test]
    fn wrong_magic_is_reported_with_both_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "train-images-idx3-ubyte.gz", &gzip(&idx_labels(&[1])));
        let e = read_idx_images(&p).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: bad magic number 0x00000801, expected 0x00000803 (IDX images)",
                p.display()
            )
        );
        let e = parse_idx_labels_bytes(&idx_images(1, 1, 1, &[0]), "x").unwrap_err();
        assert!(e.to_string().contains("expected 0x00000801 (IDX labels)"));
    }

    #[test]
    fn truncated_and_trailing_raw_and_gz() {
        let img = idx_images(2, 2, 2, &[0; 8]);
        let short = &img[..img.len() - 1];
        let mut long = img.clone();
        long.push(0);
        for gz in [false, true] {
            let enc = |d: &[u8]| if gz { gzip(d) } else { d.to_vec() };
            let e = parse_idx_images_bytes(&enc(short), "s").unwrap_err().to_string();
            assert!(e.starts_with("s: truncated: header says 2 images"), "{e}");
            assert!(e.contains("holds only 23 bytes"), "{e}");
            let e = parse_idx_images_bytes(&enc(&long), "l").unwrap_err().to_string();
            assert!(e.starts_with("l: trailing data"), "{e}");
            let e = parse_idx_images_bytes(&enc(&img[..10]), "h").unwrap_err().to_string();
            assert!(e.contains("header needs 16"), "{e}");
            let e = parse_idx_labels_bytes(&enc(&[0, 0]), "t").unwrap_err().to_string();
            assert!(e.contains("only 2 bytes"), "{e}");
        }
        // Files on disk go through the metadata-length path.
        let dir = tempfile::tempdir().unwrap();
        let e = read_idx_images(write(&dir, "short", short)).unwrap_err();
        assert!(e.to_string().contains("truncated"));
        let e = read_idx_images(write(&dir, "long", &long)).unwrap_err();
        assert!(e.to_string().contains("trailing"));
        let e = read_idx_labels(write(&dir, "empty", &[])).unwrap_err();
        assert!(e.to_string().contains("only 0 bytes"));
    }

    #[test]
    fn zero_dimensions_and_corrupt_gzip_are_errors() {
        let e = parse_idx_images_bytes(&idx_images(1, 0, 5, &[]), "z").unwrap_err();
        assert!(e.to_string().contains("0x5"), "{e}");
        let mut gz = gzip(&idx_images(1, 1, 1, &[7]));
        let n = gz.len();
        gz[n - 6] ^= 0xff; // corrupt the CRC
        let e = parse_idx_images_bytes(&gz, "c").unwrap_err().to_string();
        assert!(e.starts_with("c: "), "{e}");
        let e = parse_idx_images_bytes(&gz[..n / 2], "h").unwrap_err().to_string();
        assert!(e.starts_with("h: "), "{e}");
    }

    #[test]
    fn missing_file_and_directory_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("absent");
        let e = read_idx_labels(&p).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().starts_with(&p.display().to_string()));
        let e = read_idx_labels(dir.path()).unwrap_err();
        assert!(e.to_string().contains("directory"));
        // Not a regular file: streamed instead of trusting its metadata.
        if Path::new("/dev/null").exists() {
            let e = read_idx_labels("/dev/null").unwrap_err().to_string();
            assert!(e.contains("only 0 bytes"), "{e}");
        }
    }

    #[test]
    fn huge_header_on_tiny_file_fails_fast_without_allocating() {
        let mut img = idx_images(4_000_000_000, 28, 28, &[0; 84]);
        assert_eq!(img.len(), 100);
        let dir = tempfile::tempdir().unwrap();
        let raw = write(&dir, "raw", &img);
        let gz = write(&dir, "gz", &gzip(&img));
        let start = std::time::Instant::now();
        let (result, peak) = crate::alloc_probe::peak_during(|| read_idx_images(&raw));
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("truncated: header says 4000000000 images") && e.contains("but the file holds only 100 bytes"),
            "{e}"
        );
        assert!(peak < 1 << 20, "raw path allocated {peak} bytes");
        let (result, peak) = crate::alloc_probe::peak_during(|| read_idx_images(&gz));
        let e = result.unwrap_err().to_string();
        assert!(e.contains("holds only 100 bytes after decompression"), "{e}");
        assert!(peak < 1 << 20, "gzip path allocated {peak} bytes");
        // Maximal dimensions must not overflow either.
        img[8..16].copy_from_slice(&[0xff; 8]);
        let (result, peak) = crate::alloc_probe::peak_during(|| parse_idx_images_bytes(&img, "m"));
        assert!(result.is_err());
        assert!(peak < 1 << 20);
        assert!(start.elapsed().as_secs() < 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_idx_images_bytes(&data, "fuzz");
            let _ = parse_idx_labels_bytes(&data, "fuzz");
        }

        #[test]
        fn valid_files_round_trip(n in 0u32..5, r in 1u32..4, c in 1u32..4, gz in proptest::bool::ANY) {
            let pixels: Vec<u8> = (0..n * r * c).map(|i| i as u8).collect();
            let mut data = idx_images(n, r, c, &pixels);
            if gz { data = gzip(&data); }
            let got = parse_idx_images_bytes(&data, "p").unwrap();
            proptest::prop_assert_eq!(got.pixels, pixels);
        }
    }
}
