//! A small MP4 demuxer for the one thing input videos need: the first H.264
//! video track's parameter sets and sample byte ranges.
//!
//! Written here rather than taken from the `mp4` crate: on damaged files
//! that crate loops forever (a child box declaring size 0 inside `moov`
//! makes its box loop seek back to where it started; found by the fuzz test
//! in `decode.rs`). Every loop below advances by at least a box header or
//! ends, every count is checked against the bytes that hold it, and nothing
//! is allocated beyond the file's own size.

/// Box header: type, payload range.
struct BoxRef<'a> {
    kind: [u8; 4],
    body: &'a [u8],
}

/// The boxes directly inside `data`, in order. A size of 0 means "to the
/// end" (the last box of its parent), 1 a 64-bit size; anything smaller
/// than its own header is an error.
fn boxes(data: &[u8]) -> Result<Vec<BoxRef<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 8 {
            return Err(format!("{} stray bytes after the last box", rest.len()));
        }
        let size32 = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let kind = [rest[4], rest[5], rest[6], rest[7]];
        let (header, size) = match size32 {
            0 => (8u64, rest.len() as u64),
            1 => {
                if rest.len() < 16 {
                    return Err("truncated 64-bit box size".into());
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[8..16]);
                (16, u64::from_be_bytes(b))
            }
            n => (8, n),
        };
        if size < header || size > rest.len() as u64 {
            return Err(format!(
                "box {} declares {size} bytes, {} available",
                String::from_utf8_lossy(&kind),
                rest.len()
            ));
        }
        out.push(BoxRef {
            kind,
            body: &rest[header as usize..size as usize],
        });
        rest = &rest[size as usize..];
    }
    Ok(out)
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<&'a [u8]>, String> {
    Ok(boxes(data)?
        .into_iter()
        .find(|b| &b.kind == kind)
        .map(|b| b.body))
}

fn need<'a>(data: &'a [u8], kind: &[u8; 4], within: &str) -> Result<&'a [u8], String> {
    child(data, kind)?
        .ok_or_else(|| format!("no {} box in {within}", String::from_utf8_lossy(kind)))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "box too short".to_string())
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    let hi = u32_at(b, at)? as u64;
    let lo = u32_at(b, at + 4)? as u64;
    Ok(hi << 32 | lo)
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or_else(|| "box too short".to_string())
}

/// A full box's table: `entry_count` at offset 4 (after version/flags), then
/// `count` entries of `width` bytes, checked to fit.
fn table(b: &[u8], skip: usize, width: usize) -> Result<(usize, &[u8]), String> {
    let n = u32_at(b, 4 + skip)? as usize;
    let start = 8 + skip;
    let avail = b.len().saturating_sub(start);
    if n > avail / width {
        return Err(format!("table of {n} entries does not fit its box"));
    }
    Ok((n, &b[start..start + n * width]))
}

/// What the decoder needs from the video track.
#[derive(Debug, Clone)]
pub struct VideoTrack {
    pub width: u32,
    pub height: u32,
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    /// Bytes of each NAL length prefix (1, 2 or 4).
    pub nal_length: usize,
    /// Byte range of every sample in the file, in decode order.
    pub samples: Vec<(usize, usize)>,
    /// Track duration in seconds (0 when unknown).
    pub seconds: f64,
}

/// Finds the first video track and maps its samples. Errors say what is
/// missing or broken; `Unsupported` is returned as `Err(Ok(..))` by the
/// caller's reading: a codec other than H.264 is `Err` with a message
/// starting "codec ".
pub fn video_track(file: &[u8]) -> Result<VideoTrack, String> {
    let top = boxes(file)?;
    let moov = top
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or("no moov box (not an MP4, or a fragmented one)")?;
    let mut codec_seen = None;
    for trak in boxes(moov.body)?.into_iter().filter(|b| &b.kind == b"trak") {
        let mdia = need(trak.body, b"mdia", "trak")?;
        let hdlr = need(mdia, b"hdlr", "mdia")?;
        if hdlr.get(8..12) != Some(b"vide".as_slice()) {
            continue;
        }
        let mdhd = need(mdia, b"mdhd", "mdia")?;
        let (timescale, duration) = if mdhd.first() == Some(&1) {
            (u32_at(mdhd, 20)?, u64_at(mdhd, 24)?)
        } else {
            (u32_at(mdhd, 12)?, u32_at(mdhd, 16)? as u64)
        };
        let stbl = need(need(mdia, b"minf", "mdia")?, b"stbl", "minf")?;
        let stsd = need(stbl, b"stsd", "stbl")?;
        // stsd: version/flags, entry count, then sample entries (boxes).
        let entries = boxes(stsd.get(8..).ok_or("stsd too short")?)?;
        let entry = entries.first().ok_or("stsd has no sample entry")?;
        if &entry.kind != b"avc1" && &entry.kind != b"avc3" {
            codec_seen = Some(String::from_utf8_lossy(&entry.kind).to_string());
            continue;
        }
        // Visual sample entry: 78 bytes of fixed fields, then boxes.
        let width = u16_at(entry.body, 24)? as u32;
        let height = u16_at(entry.body, 26)? as u32;
        let avcc = need(
            entry.body.get(78..).ok_or("avc1 entry too short")?,
            b"avcC",
            "avc1",
        )?;
        let (sps, pps, nal_length) = parse_avcc(avcc)?;
        let samples = sample_ranges(stbl, file.len())?;
        let seconds = if timescale > 0 {
            duration as f64 / timescale as f64
        } else {
            0.0
        };
        return Ok(VideoTrack {
            width,
            height,
            sps,
            pps,
            nal_length,
            samples,
            seconds,
        });
    }
    Err(match codec_seen {
        Some(c) => format!("codec {c}"),
        None => "the file has no video track".into(),
    })
}

/// `avcC`: the first SPS and PPS and the NAL length size.
fn parse_avcc(b: &[u8]) -> Result<(Vec<u8>, Vec<u8>, usize), String> {
    if b.len() < 7 {
        return Err("avcC too short".into());
    }
    let nal_length = (b[4] & 3) as usize + 1;
    if nal_length == 3 {
        return Err("avcC declares 3-byte NAL lengths".into());
    }
    let mut at = 5;
    let n_sps = (b[at] & 0x1f) as usize;
    at += 1;
    let read = |at: &mut usize| -> Result<Vec<u8>, String> {
        let n = u16_at(b, *at)? as usize;
        let s = b
            .get(*at + 2..*at + 2 + n)
            .ok_or("avcC parameter set overruns")?;
        *at += 2 + n;
        Ok(s.to_vec())
    };
    let mut sps = None;
    for _ in 0..n_sps {
        let s = read(&mut at)?;
        sps.get_or_insert(s);
    }
    let n_pps = *b.get(at).ok_or("avcC has no PPS count")? as usize;
    at += 1;
    let mut pps = None;
    for _ in 0..n_pps {
        let p = read(&mut at)?;
        pps.get_or_insert(p);
    }
    match (sps, pps) {
        (Some(s), Some(p)) => Ok((s, p, nal_length)),
        _ => Err("avcC lacks an SPS or a PPS".into()),
    }
}

/// Every sample's byte range from stsz, stsc and stco/co64.
fn sample_ranges(stbl: &[u8], file_len: usize) -> Result<Vec<(usize, usize)>, String> {
    let stsz = need(stbl, b"stsz", "stbl")?;
    let fixed = u32_at(stsz, 4)? as usize;
    let count = u32_at(stsz, 8)? as usize;
    let sizes: Vec<usize> = if fixed != 0 {
        if count > file_len {
            return Err(format!("stsz declares {count} samples"));
        }
        vec![fixed; count]
    } else {
        let (n, t) = table(stsz, 4, 4)?;
        (0..n)
            .map(|i| u32_at(t, i * 4).map(|v| v as usize))
            .collect::<Result<_, _>>()?
    };
    let chunks: Vec<u64> = if let Some(stco) = child(stbl, b"stco")? {
        let (n, t) = table(stco, 0, 4)?;
        (0..n)
            .map(|i| u32_at(t, i * 4).map(u64::from))
            .collect::<Result<_, _>>()?
    } else {
        let co64 = need(stbl, b"co64", "stbl (no stco either)")?;
        let (n, t) = table(co64, 0, 8)?;
        (0..n).map(|i| u64_at(t, i * 8)).collect::<Result<_, _>>()?
    };
    let (n, t) = table(need(stbl, b"stsc", "stbl")?, 0, 12)?;
    let runs: Vec<(usize, usize)> = (0..n)
        .map(|i| Ok((u32_at(t, i * 12)? as usize, u32_at(t, i * 12 + 4)? as usize)))
        .collect::<Result<_, String>>()?;
    let mut out = Vec::with_capacity(sizes.len());
    let mut sample = 0;
    for (r, &(first, per_chunk)) in runs.iter().enumerate() {
        let next_first = runs.get(r + 1).map_or(chunks.len() + 1, |x| x.0);
        if first == 0 || next_first < first {
            return Err("stsc runs out of order".into());
        }
        for chunk in first..next_first.min(chunks.len() + 1) {
            let mut at = chunks[chunk - 1] as usize;
            for _ in 0..per_chunk {
                let Some(&size) = sizes.get(sample) else {
                    return Ok(out);
                };
                let end = at
                    .checked_add(size)
                    .filter(|e| *e <= file_len)
                    .ok_or_else(|| format!("sample {} lies outside the file", sample + 1))?;
                out.push((at, end));
                at = end;
                sample += 1;
            }
        }
    }
    Ok(out)
}
