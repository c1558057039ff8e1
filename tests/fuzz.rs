//! Mutation fuzzing of every parser that reads untrusted bytes: job
//! messages (JSON and protobuf, then validation), AMQP properties as
//! intake reads them, first-frame images (header check, then decode), input
//! videos (MP4 demux and H.264 decode), the checkpoint reader and the
//! safetensors header check. Each target starts
//! from valid seeds and applies random mutations (bit flips, byte and
//! token insertions, deletions, duplications, splices, truncation,
//! boundary integers); a panic is a failure, and the input that caused it
//! is written next to the test's output and printed as hex.
//!
//! Why our own loop rather than cargo-fuzz: cargo-fuzz needs a nightly
//! toolchain and a separate build, and CI runs the stable test command
//! only. This loop has no coverage feedback, so its seeds carry the
//! structure. `VIDFLOW_FUZZ_ITERS` sets the inputs per target (CI: the
//! default 20 000; the 1 M runs reported in docs/SECURITY.md set it).

use std::panic::{catch_unwind, AssertUnwindSafe};

use vidflow_connectors::amqp::{self, Trust};
use vidflow_connectors::lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use vidflow_connectors::lapin::BasicProperties;
use vidflow_operators::AdmissionConfig;

/// xorshift64*: fast, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"-1",
    b"0",
    b"1e309",
    b"18446744073709551616",
    b"9999999999",
    b"\\u0000",
    b"\"tenant\"",
    b"\"job_id\"",
    b"\"image\"",
    b"\"key\"",
    b"\"inline_base64\"",
    b"\"frames\"",
    b"\"resolution\":\"4k\"",
    b"../",
    b"\xff\xfe",
    b"\x00",
    b"NaN",
    b"true",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let mut v = seeds[rng.below(seeds.len())].clone();
    // Mostly few mutations (deep inputs), sometimes many (odd ones).
    let k = rng.below(8) + 1;
    for _ in 0..1 + rng.below(k) {
        let len = v.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                v.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = v[a..b].to_vec();
                let i = rng.below(len + 1);
                v.splice(i..i, chunk);
            }
            5 => v.truncate(rng.below(len + 1)),
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + 1 + rng.below(128)).min(other.len());
                    let i = rng.below(len + 1);
                    v.splice(i..i, other[a..b].iter().copied());
                }
            }
            7 if len >= 4 => {
                let i = rng.below(len - 3);
                let x: u32 = [
                    0,
                    1,
                    0x7f,
                    0x80,
                    0xff,
                    0xffff,
                    0x7fff_ffff,
                    0x8000_0000,
                    u32::MAX,
                ][rng.below(9)];
                let b = if rng.below(2) == 0 {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                };
                v[i..i + 4].copy_from_slice(&b);
            }
            _ => {
                let t = TOKENS[rng.below(TOKENS.len())];
                let i = rng.below(len + 1);
                v.splice(i..i, t.iter().copied());
            }
        }
    }
    v.truncate(max_len);
    v
}

fn iters() -> usize {
    std::env::var("VIDFLOW_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

/// Runs `target` on `iters()` mutated inputs; any panic fails the test
/// with the input (also written to the temp dir). `target` says whether an
/// input got past the first parse (reported, so a run whose mutations never
/// reach the deeper code shows it).
fn fuzz(
    name: &str,
    seed: u64,
    seeds: Vec<Vec<u8>>,
    max_len: usize,
    target: impl Fn(&[u8]) -> bool,
) {
    let n = iters();
    let mut rng = Rng(seed | 1);
    // Seeds must be handled without a panic too.
    for s in &seeds {
        let _ = target(s);
    }
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let t0 = std::time::Instant::now();
    let mut deep = 0usize;
    for i in 0..n {
        let input = mutate(&mut rng, &seeds, max_len);
        match catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(true) => deep += 1,
            Ok(false) => {}
            Err(_) => {
                std::panic::set_hook(quiet);
                let path = std::env::temp_dir().join(format!("vidflow-fuzz-{name}-{i}.bin"));
                let _ = std::fs::write(&path, &input);
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                panic!(
                    "{name}: input {i} panicked (saved to {}): {hex}",
                    path.display()
                );
            }
        }
    }
    std::panic::set_hook(quiet);
    eprintln!(
        "fuzz {name}: {n} inputs, no panic, {deep} past the first parse, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

const JOB_JSON: &str = r#"{"job_id":"j-1","tenant":"acme","tier":"premium","kind":"t2v",
    "prompt":"a red fox running through snow","negative_prompt":"blurry","resolution":"720p",
    "seconds":3.5,"fps":30,"mode":"cinema","steps":40,"guidance":2.5,"seed":99,"model":"ltx-tiny","audio":false}"#;

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

fn admission() -> AdmissionConfig {
    AdmissionConfig::builtin_tiny()
}

#[test]
fn fuzz_json_job_decoding_and_validation() {
    let cfg = admission();
    use base64::Engine as _;
    let inline = base64::engine::general_purpose::STANDARD.encode(png(8, 8));
    let seeds = vec![
        JOB_JSON.as_bytes().to_vec(),
        format!(
            r#"{{"tenant":"acme","tier":"free","kind":"i2v","prompt":"p","resolution":"480p","image":{{"inline_base64":"{inline}"}}}}"#
        )
        .into_bytes(),
        br#"{"tenant":"acme","tier":"standard","kind":"i2v","prompt":"p","resolution":"256x256","frames":9,"image":{"key":"acme/in/a.png"}}"#.to_vec(),
        br#"{"tenant":"acme","tier":"free","kind":"t2v","prompt":"p","resolution":"256x256","frames":17,"conditions":[{"image":{"key":"acme/in/a.png"},"frame_index":0},{"video":{"key":"acme/in/b.mp4"},"frame_index":8,"strength":0.5}]}"#.to_vec(),
        br#"{"tenant":"acme","tier":"free","kind":"v2v","prompt":"p","resolution":"256x256","frames":9,"video":{"key":"acme/in/b.mp4"},"strength":0.4}"#.to_vec(),
        br#"{"tenant":"acme","tier":"free","kind":"t2v","prompt":"p","resolution":"256x256","frames":17,"extend":{"video":{"key":"acme/in/b.mp4"},"overlap_frames":9}}"#.to_vec(),
    ];
    fuzz("json_job", 1, seeds, 4096, |b| {
        match amqp::decode_job(b, Some(amqp::JSON), 1 << 20) {
            Ok(spec) => {
                let _ = vidflow_operators::validate(&spec, &cfg);
                true
            }
            Err(_) => false,
        }
    });
}

#[test]
fn fuzz_protobuf_job_decoding_and_validation() {
    use prost::Message;
    let cfg = admission();
    let spec = vidflow_operators::JobSpec::from_json(JOB_JSON).unwrap();
    let mut seeds = vec![vidflow_operators::proto::JobSpec::try_from(&spec)
        .unwrap()
        .encode_to_vec()];
    let mut i2v = spec.clone();
    i2v.kind = vidflow_operators::JobKind::I2v;
    i2v.image = Some(vidflow_operators::ImageSource::Key("acme/a.png".into()));
    seeds.push(
        vidflow_operators::proto::JobSpec::try_from(&i2v)
            .unwrap()
            .encode_to_vec(),
    );
    fuzz("protobuf_job", 2, seeds, 4096, |b| {
        match amqp::decode_job(b, Some(amqp::PROTOBUF), 1 << 20) {
            Ok(spec) => {
                let _ = vidflow_operators::validate(&spec, &cfg);
                true
            }
            Err(_) => false,
        }
    });
}

/// The properties intake reads (user_id, message_id, content type, the
/// submitted-at header), built from the fuzzed bytes field by field.
#[test]
fn fuzz_amqp_properties_as_intake_reads_them() {
    let trust = Trust {
        service_users: vec!["vidflow".into()],
        tenants: amqp::Tenants::Fixed(["acme".to_string()].into_iter().collect()),
    };
    let seeds = vec![
        b"vidflow\x00m-1\x00application/json\x001765000000000".to_vec(),
        b"acme\x00\x00application/x-protobuf\x00abc".to_vec(),
        b"\x00\x00\x00".to_vec(),
    ];
    fuzz("amqp_properties", 3, seeds, 1024, |b| {
        let mut parts = b.split(|&c| c == 0);
        let mut text = |max: usize| {
            parts.next().map(|p| {
                let s = String::from_utf8_lossy(p);
                s.chars().take(max).collect::<String>()
            })
        };
        let (user, id, ct, submitted) = (text(255), text(255), text(255), text(4096));
        let mut props = BasicProperties::default();
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            props =
                props.with_user_id(ShortString::try_new(u.as_str()).unwrap_or_else(|_| "x".into()));
        }
        if let Some(m) = id {
            props = props
                .with_message_id(ShortString::try_new(m.as_str()).unwrap_or_else(|_| "x".into()));
        }
        if let Some(c) = ct {
            props = props
                .with_content_type(ShortString::try_new(c.as_str()).unwrap_or_else(|_| "x".into()));
        }
        let mut h = FieldTable::default();
        if let Some(s) = submitted {
            h.insert(
                amqp::H_SUBMITTED_MS.into(),
                AMQPValue::LongString(LongString::from(s.as_str())),
            );
        }
        props = props.with_headers(h);
        let ok = amqp::authenticate(&props, &trust).is_ok();
        let _ = amqp::header_str(&props, amqp::H_SUBMITTED_MS).and_then(|s| s.parse::<u64>().ok());
        let ct = props
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_string());
        let _ = amqp::decode_job(JOB_JSON.as_bytes(), ct.as_deref(), 1 << 20);
        ok
    });
}

#[test]
fn fuzz_first_frame_images() {
    let seeds = vec![png(16, 12), jpeg(16, 12), png(1, 1)];
    fuzz("image", 4, seeds, 8192, |b| {
        match vidflow_operators::image_header(b) {
            Ok(h) => {
                // Only small images are decoded here (the header limits
                // bound a real decode; the fuzzer is after panics).
                if (h.width as u64) * (h.height as u64) <= 1 << 16 {
                    let _ = vidflow_operators::decode_image(b, 32, 32);
                }
                true
            }
            Err(_) => false,
        }
    });
}

/// Input videos (v2v sources, video keyframes, videos to extend): our own
/// MP4 demuxer, then OpenH264's decode, on small clips we encoded.
#[test]
fn fuzz_input_videos() {
    use vidflow_connectors::mp4::{decode_mp4, encode_mp4, VideoLimits};
    let clip = |w: u32, h: u32, n: u32| -> Vec<u8> {
        let rgb: Vec<u8> = (0..w * h * 3 * n).map(|i| (i * 7 % 251) as u8).collect();
        encode_mp4(&rgb, w, h, n, 8.0).unwrap()
    };
    let seeds = vec![clip(16, 16, 3), clip(32, 16, 2), clip(16, 32, 1)];
    let limits = VideoLimits {
        max_side: 64,
        max_pixels: 64 * 64,
        max_frames: 8,
    };
    fuzz("mp4", 8, seeds, 16384, |b| decode_mp4(b, limits).is_ok());
}

#[test]
fn fuzz_the_checkpoint_reader() {
    use vidflow_operators::checkpoint::{encode_checkpoint, parse_checkpoint};
    let shape = [1usize, 4, 2, 3];
    let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let seed = encode_checkpoint("job-1", 7, &shape, "req", &data);
    assert_eq!(
        parse_checkpoint(&seed, "job-1", "req", &shape).unwrap().1,
        data
    );
    fuzz("checkpoint", 5, vec![seed], 4096, |b| {
        // "Deep": past the header, to the binding, checksum and length.
        !matches!(
            parse_checkpoint(b, "job-1", "req", &shape),
            Err(vidflow_operators::checkpoint::CheckpointError::BadMagic
                | vidflow_operators::checkpoint::CheckpointError::Truncated
                | vidflow_operators::checkpoint::CheckpointError::Header(_))
        )
    });
}

#[test]
fn fuzz_the_safetensors_header_check() {
    let header = br#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"__metadata__":{"format":"pt"}}"#;
    let mut seed = (header.len() as u64).to_le_bytes().to_vec();
    seed.extend_from_slice(header);
    seed.extend_from_slice(&[0u8; 22]);
    assert_eq!(
        vidflow_gpu::weights::check_safetensors(&seed)
            .unwrap()
            .1
            .len(),
        2
    );
    fuzz("safetensors", 6, vec![seed], 4096, |b| {
        vidflow_gpu::weights::check_safetensors(b).is_ok()
    });
}

#[test]
fn fuzz_the_prompt_reading_without_evasion() {
    // Prompt text is untrusted: the second reading (look-alike letters,
    // leetspeak, spaced letters) must take any string without a panic,
    // and stay within a small multiple of its length.
    let seeds: Vec<Vec<u8>> = [
        "a n u d e woman, k1ll the n@k3d $lut",
        "k i l l  t h e  m a n",
        "n\u{0430}k\u{0435}d \u{200b}w\u{043e}m\u{03bf}n ｎｕｄｅ 𝐠𝐨𝐫𝐞 nüdé",
        "1080p video, 24fps, 3 cats, 4k, 3d, h264, wow! s-h-o-o-t",
        "\u{202e}reversed\u{202c} z\u{0335}a\u{0336}l\u{0337}g\u{0338}o",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    fuzz("unevade", 7, seeds, 2000, |b| {
        let s = String::from_utf8_lossy(b);
        let out = vidflow_operators::safety::evasion::unevade(&s);
        assert!(out.len() <= 8 * s.len() + 8, "{} -> {}", s.len(), out.len());
        true
    });
}
