//! Job spec parsing, validation and admission: every rejection names its
//! field; valid specs get the documented defaults.

use std::io::Cursor;
use std::path::Path;

use base64::Engine;
use prost::Message;
use vidflow_job::id::job_id_from_parts;
use vidflow_job::{
    default_seed, generate_job_id, job_id_timestamp_ms, proto, validate, AdmissionConfig,
    ImageInput, ImageSource, JobError, JobKind, JobSpec, Mode, Tier, ValidatedJob,
};

fn cfg() -> AdmissionConfig {
    AdmissionConfig::builtin_tiny()
}

fn t2v() -> JobSpec {
    JobSpec::new(
        "acme",
        Tier::Standard,
        JobKind::T2v,
        "a red fox in snow",
        "480p",
    )
}

fn i2v(image: ImageSource) -> JobSpec {
    let mut s = t2v();
    s.kind = JobKind::I2v;
    s.image = Some(image);
    s
}

fn ok(spec: &JobSpec) -> ValidatedJob {
    validate(spec, &cfg()).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

/// Validates and expects `Invalid` naming `field`, with `reason_part` in the
/// message; returns the message.
fn invalid(spec: &JobSpec, field: &str, reason_part: &str) -> String {
    invalid_with(spec, &cfg(), field, reason_part)
}

fn invalid_with(spec: &JobSpec, cfg: &AdmissionConfig, field: &str, part: &str) -> String {
    match validate(spec, cfg) {
        Err(e @ JobError::Invalid { .. }) => {
            let msg = e.to_string();
            assert_eq!(e.field(), field, "{msg}");
            assert!(msg.contains(part), "{msg:?} lacks {part:?}");
            msg
        }
        other => panic!("expected Invalid {field}, got {other:?}"),
    }
}

fn json_err(json: &str, field: &str, part: &str) -> JobError {
    let e = JobSpec::from_json(json).expect_err(json);
    assert_eq!(e.field(), field, "{e}");
    assert!(e.to_string().contains(part), "{e} lacks {part:?}");
    e
}

fn png_bytes(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const BASE_JSON: &str =
    r#""tenant":"acme","tier":"free","kind":"t2v","prompt":"p","resolution":"480p""#;

// ---------------------------------------------------------------- invalid

#[test]
fn width_not_multiple_of_32_names_nearest() {
    let mut s = t2v();
    s.resolution = "1000x512".into();
    let msg = invalid(
        &s,
        "resolution",
        "width 1000 must be a multiple of 32 (nearest: 992 or 1024)",
    );
    assert!(msg.contains("\"1000x512\""), "{msg}");
}

#[test]
fn height_not_multiple_of_32() {
    let mut s = t2v();
    s.resolution = "832x500".into();
    invalid(
        &s,
        "resolution",
        "height 500 must be a multiple of 32 (nearest: 480 or 512)",
    );
}

#[test]
fn side_below_256_rejected() {
    let mut s = t2v();
    s.resolution = "832x128".into();
    invalid(
        &s,
        "resolution",
        "height 128 must be in 256..=3840 (nearest: 256)",
    );
    s.resolution = "100x480".into();
    invalid(&s, "resolution", "nearest: 256");
}

#[test]
fn above_4k_pixels_rejected() {
    let mut s = t2v();
    s.resolution = "3840x3840".into();
    invalid(&s, "resolution", "exceeds the 4K limit 3840x2176");
    s.resolution = "4096x2176".into();
    invalid(
        &s,
        "resolution",
        "width 4096 must be in 256..=3840 (nearest: 3840)",
    );
}

#[test]
fn unknown_resolution_format() {
    let mut s = t2v();
    s.resolution = "8k".into();
    invalid(
        &s,
        "resolution",
        "must be a preset (480p, 720p, 768p, 1080p, 4k) or WxH",
    );
}

#[test]
fn ten_frames_names_9_or_17() {
    let mut s = t2v();
    s.frames = Some(10);
    invalid(&s, "frames", "must be 8n+1");
    invalid(&s, "frames", "(nearest: 9 or 17)");
}

#[test]
fn frames_zero_and_too_many() {
    let mut s = t2v();
    s.frames = Some(0);
    invalid(&s, "frames", "(nearest: 1)");
    s.frames = Some(2889);
    invalid(&s, "frames", "(nearest: 2881)");
    s.frames = Some(2882);
    invalid(&s, "frames", "(nearest: 2881)");
}

#[test]
fn seconds_too_long_or_not_positive() {
    let mut s = t2v();
    s.seconds = Some(121.0);
    invalid(&s, "seconds", "at most 120.04 s at 24 fps (2881 frames)");
    s.seconds = Some(0.0);
    invalid(&s, "seconds", "must be > 0");
    s.seconds = Some(f64::INFINITY);
    invalid(&s, "seconds", "must be > 0");
}

#[test]
fn zero_steps_rejected() {
    let mut s = t2v();
    s.steps = Some(0);
    invalid(&s, "steps", "must be in 1..=200");
    s.steps = Some(201);
    invalid(&s, "steps", "must be in 1..=200");
}

#[test]
fn negative_steps_json_names_steps() {
    let e = json_err(&format!(r#"{{{BASE_JSON},"steps":-5}}"#), "steps", "-5");
    match e {
        JobError::Invalid { value, reason, .. } => {
            assert_eq!(value, "-5");
            assert!(reason.contains("u32"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    json_err(
        &format!(r#"{{{BASE_JSON},"steps":"many"}}"#),
        "steps",
        "\"many\"",
    );
}

#[test]
fn unknown_model_lists_known() {
    let mut s = t2v();
    s.model = Some("ltx-13b".into());
    match validate(&s, &cfg()) {
        Err(e @ JobError::UnknownModel { .. }) => {
            assert_eq!(e.field(), "model");
            let msg = e.to_string();
            assert!(
                msg.contains("\"ltx-13b\"") && msg.contains("known: ltx-tiny"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversize_for_vram_rejected() {
    let mut small = cfg();
    // A 4 GiB worker: the 832x480 default clip needs ~3 GB by the estimate
    // (mostly the GPU decode's im2col buffer), 4K for 10 s far more.
    small.worker_vram_bytes = 4 << 30;
    let mut s = t2v();
    s.resolution = "4k".into();
    s.seconds = Some(10.0);
    let e = validate(&s, &small).unwrap_err();
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.contains("3840x2176, 241 frames on model \"ltx-tiny\""),
        "{msg}"
    );
    assert!(msg.contains("more than a worker's 4.00 GiB"), "{msg}");
    match e {
        JobError::TooLarge {
            needed_bytes,
            limit_bytes,
            model,
            width,
            height,
            num_frames,
        } => {
            assert!(needed_bytes > limit_bytes);
            assert_eq!(limit_bytes, 4 << 30);
            assert_eq!(
                (model.as_str(), width, height, num_frames),
                ("ltx-tiny", 3840, 2176, 241)
            );
        }
        other => panic!("{other:?}"),
    }
    // The same small worker holds a small job.
    let small_job = t2v();
    let j = validate(&small_job, &small).unwrap();
    assert!(j.estimated_vram_bytes <= 4 << 30);
}

#[test]
fn i2v_without_image() {
    let mut s = t2v();
    s.kind = JobKind::I2v;
    invalid(&s, "image", "kind \"i2v\" requires an image");
}

#[test]
fn t2v_with_image() {
    let mut s = t2v();
    s.image = Some(ImageSource::Key("acme/a.png".into()));
    invalid(&s, "image", "kind \"t2v\" takes no image");
}

#[test]
fn corrupt_png_names_image_with_decoder_message() {
    let mut png = png_bytes(64, 64, |x, y| [x as u8, y as u8, 0]);
    png.truncate(png.len() / 2);
    // Damage the pixel data only (the IDAT payload starts at byte 41): the
    // header still reads.
    for b in &mut png[45..] {
        *b ^= 0x5a;
    }
    // Validation reads only the header (intact here); the one decode, at
    // admission, names the field and carries the decoder's message.
    let j = ok(&i2v(ImageSource::InlineBase64(b64(&png))));
    assert!(matches!(j.image, Some(ImageInput::Inline(_))));
    let msg = vidflow_job::decode_image(&png, 832, 480)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("image") && msg.contains("cannot decode Png: "),
        "{msg}"
    );
    assert!(msg.len() > "cannot decode Png: ".len() + 20, "{msg}");
}

#[test]
fn non_image_bytes_rejected() {
    let s = i2v(ImageSource::InlineBase64(b64(b"GIF89a not really")));
    invalid(&s, "image", "must be a PNG or JPEG image (detected: Gif)");
    let s = i2v(ImageSource::InlineBase64(b64(b"hello world, plain text")));
    invalid(
        &s,
        "image",
        "must be a PNG or JPEG image (detected: unknown)",
    );
}

#[test]
fn bad_base64_names_image() {
    let s = i2v(ImageSource::InlineBase64("not base64 at all!*".into()));
    invalid(&s, "image", "not valid base64");
}

#[test]
fn path_like_image_key_rejected() {
    for key in ["../secret.png", "/etc/passwd", "a//b.png", "a/./b", ""] {
        invalid(
            &i2v(ImageSource::Key(key.into())),
            "image",
            "relative object-store key",
        );
    }
}

#[test]
fn path_like_tenant_rejected() {
    for t in ["../x", "a/b", "", "a b", &"x".repeat(65)] {
        let mut s = t2v();
        s.tenant = t.to_string();
        invalid(
            &s,
            "tenant",
            "must be 1 to 64 characters of A-Z a-z 0-9 _ - (no paths)",
        );
    }
}

#[test]
fn reserved_tenant_names_rejected() {
    for t in ["jobs", "checkpoints", "safety", "attempts", "analytics"] {
        let mut s = t2v();
        s.tenant = t.to_string();
        invalid(&s, "tenant", "reserved for the service's own storage");
    }
}

#[test]
fn path_like_job_id_rejected() {
    for id in ["../x", "a/b", "a\\b", "x.mp4", ""] {
        let mut s = t2v();
        s.job_id = Some(id.to_string());
        invalid(&s, "job_id", "no paths");
    }
}

#[test]
fn audio_not_supported_yet() {
    let mut s = t2v();
    s.audio = true;
    let e = validate(&s, &cfg()).unwrap_err();
    assert!(matches!(e, JobError::Unsupported { .. }), "{e:?}");
    assert_eq!(e.field(), "audio");
    assert_eq!(e.to_string(), "audio: audio is not supported yet");
}

#[test]
fn seconds_and_frames_both_rejected() {
    let mut s = t2v();
    s.seconds = Some(2.0);
    s.frames = Some(49);
    invalid(&s, "frames", "give either seconds (2) or frames, not both");
}

#[test]
fn unknown_and_missing_fields_named() {
    json_err(
        &format!(r#"{{{BASE_JSON},"step":30}}"#),
        "step",
        "unknown field `step`",
    );
    json_err(
        r#"{"tier":"free","kind":"t2v","prompt":"p","resolution":"480p"}"#,
        "tenant",
        "missing field `tenant`",
    );
    json_err(
        &format!(r#"{{{BASE_JSON},"image":{{"url":"x"}}}}"#),
        "image",
        "unknown variant `url`",
    );
    json_err(
        &format!(r#"{{{BASE_JSON},"mode":"turbo"}}"#),
        "mode",
        "unknown variant `turbo`",
    );
    json_err("{not json", "(body)", "not valid JSON");
}

#[test]
fn fps_out_of_range() {
    let mut s = t2v();
    s.fps = Some(0.0);
    invalid(&s, "fps", "must be in 1..=60");
    s.fps = Some(120.0);
    invalid(&s, "fps", "must be in 1..=60");
    s.fps = Some(f64::NAN);
    invalid(&s, "fps", "must be in 1..=60");
}

#[test]
fn empty_blank_or_long_prompt() {
    let mut s = t2v();
    s.prompt = String::new();
    invalid(
        &s,
        "prompt",
        "must be 1 to 2000 characters, not blank (got 0)",
    );
    s.prompt = "   \n".into();
    invalid(&s, "prompt", "not blank");
    s.prompt = "é".repeat(2001);
    let msg = invalid(&s, "prompt", "(got 2001)");
    assert!(msg.len() < 400, "long values are shortened: {msg}");
    s.prompt = "ok".into();
    s.negative_prompt = Some("n".repeat(2001));
    invalid(&s, "negative_prompt", "must be 0 to 2000 characters");
}

#[test]
fn guidance_nan_or_too_large() {
    let mut s = t2v();
    s.guidance = Some(f64::NAN);
    invalid(&s, "guidance", "must be a number in 0..=20");
    s.guidance = Some(20.5);
    invalid(&s, "guidance", "must be a number in 0..=20");
    s.guidance = Some(-1.0);
    invalid(&s, "guidance", "must be a number in 0..=20");
}

#[test]
fn proto_unspecified_enums_rejected() {
    let mut p = proto::JobSpec::try_from(&t2v()).unwrap();
    p.tier = 0;
    let e = JobSpec::try_from(p.clone()).unwrap_err();
    assert_eq!(e.field(), "tier", "{e}");
    p.tier = proto::Tier::Free as i32;
    p.kind = 7;
    assert_eq!(JobSpec::try_from(p).unwrap_err().field(), "kind");
}

// ------------------------------------------------------------------ valid

#[test]
fn presets_map_to_multiples_of_32() {
    let want = [
        ("480p", 832, 480),
        ("720p", 1280, 704),
        ("768p", 1344, 768),
        ("1080p", 1920, 1088),
        ("4k", 3840, 2176),
        ("4K", 3840, 2176),
        ("1024x576", 1024, 576),
        ("256X256", 256, 256),
        ("2176x3840", 2176, 3840),
    ];
    for (res, w, h) in want {
        let mut s = t2v();
        s.resolution = res.into();
        s.frames = Some(9);
        let j = ok(&s);
        assert_eq!((j.width, j.height), (w, h), "{res}");
    }
}

#[test]
fn seconds_convert_to_8n_plus_1() {
    for (secs, fps, frames) in [
        (5.0, 24.0, 121),
        (2.0, 24.0, 49),
        (1.0, 25.0, 25),
        (1.1, 25.0, 33),
        (0.01, 24.0, 1),
        (60.0, 24.0, 1441),
        (120.0, 24.0, 2881),
        (10.0, 30.0, 305),
    ] {
        let mut s = t2v();
        s.seconds = Some(secs);
        s.fps = Some(fps);
        assert_eq!(ok(&s).num_frames, frames, "{secs} s at {fps} fps");
    }
}

#[test]
fn mode_defaults_apply_and_overrides_win() {
    let j = ok(&t2v());
    assert_eq!(
        (j.mode, j.steps, j.guidance, j.num_frames, j.fps),
        (Mode::Standard, 30, 3.0, 121, 24.0)
    );
    let mut s = t2v();
    s.mode = Mode::Realtime;
    let j = ok(&s);
    assert_eq!((j.steps, j.guidance, j.num_frames), (8, 1.0, 49));
    s.mode = Mode::Cinema;
    s.steps = Some(12);
    s.guidance = Some(4.5);
    s.frames = Some(17);
    let j = ok(&s);
    assert_eq!((j.steps, j.guidance, j.num_frames), (12, 4.5, 17));
    assert_eq!(j.model_id, "ltx-tiny");
    assert_eq!(j.negative_prompt, "");
    assert!(j.image.is_none());
}

#[test]
fn default_seed_is_stable_per_job_id() {
    let mut s = t2v();
    s.job_id = Some("order-42".into());
    let a = ok(&s).seed;
    let b = ok(&s.clone()).seed;
    assert_eq!(a, b);
    assert_eq!(a, default_seed("order-42"));
    // Pinned: changing the derivation changes every default-seeded video.
    assert_eq!(
        default_seed("order-42"),
        default_seed(&String::from("order-42"))
    );
    s.job_id = Some("order-43".into());
    assert_ne!(ok(&s).seed, a);
    s.seed = Some(7);
    assert_eq!(ok(&s).seed, 7);
}

#[test]
fn generated_job_ids_sort_by_time() {
    let early = job_id_from_parts(1_700_000_000_000, u128::MAX);
    let late = job_id_from_parts(1_700_000_000_001, 0);
    assert!(early < late);
    assert_eq!(job_id_timestamp_ms(&late), Some(1_700_000_000_001));
    let ids: Vec<String> = (0..200).map(|_| generate_job_id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ts = job_id_timestamp_ms(&ids[0]).unwrap();
    assert!(now.abs_diff(ts) < 60_000, "{ts} vs {now}");
    // A spec without an id gets one; ensure_job_id pins it.
    let j = ok(&t2v());
    assert_eq!(j.job_id.len(), 26);
    let mut s = t2v();
    let id = s.ensure_job_id().to_string();
    assert_eq!(s.ensure_job_id(), id);
    assert_eq!(ok(&s).seed, ok(&s).seed);
}

#[test]
fn inline_png_decoded_and_cover_resized() {
    // 200x100: left half red, right half blue. The 832x480 frame (aspect
    // 1.73) is covered by scaling the 2:1 image and cropping its sides.
    let png = png_bytes(
        200,
        100,
        |x, _| if x < 100 { [255, 0, 0] } else { [0, 0, 255] },
    );
    let j = ok(&i2v(ImageSource::InlineBase64(b64(&png))));
    let Some(ImageInput::Inline(bytes)) = &j.image else {
        panic!("{:?}", j.image)
    };
    let img = vidflow_job::decode_image(bytes, j.width, j.height).unwrap();
    assert_eq!((img.width, img.height), (832, 480));
    assert_eq!(img.data.len(), 832 * 480 * 3);
    let px = |x: usize, y: usize| &img.data[(y * 832 + x) * 3..(y * 832 + x) * 3 + 3];
    assert_eq!(px(0, 240), &[255, 0, 0]);
    assert_eq!(px(831, 240), &[0, 0, 255]);
    assert_eq!(px(200, 0), &[255, 0, 0]);
    // Data URL prefix and missing padding are accepted; same pixels.
    let url = format!("data:image/png;base64,{}", b64(&png).trim_end_matches('='));
    let j2 = ok(&i2v(ImageSource::InlineBase64(url)));
    let Some(ImageInput::Inline(bytes2)) = &j2.image else {
        panic!()
    };
    let img2 = vidflow_job::decode_image(bytes2, j2.width, j2.height).unwrap();
    assert_eq!(img.data, img2.data);
}

#[test]
fn inline_jpeg_and_exact_size_png() {
    let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut jpg = Vec::new();
    img.write_to(&mut Cursor::new(&mut jpg), image::ImageFormat::Jpeg)
        .unwrap();
    let decoded = |j: &ValidatedJob| match &j.image {
        Some(ImageInput::Inline(b)) => vidflow_job::decode_image(b, j.width, j.height).unwrap(),
        other => panic!("{other:?}"),
    };
    let j = ok(&i2v(ImageSource::InlineBase64(b64(&jpg))));
    let i = decoded(&j);
    assert_eq!((i.width, i.height), (832, 480));
    // Already the video size: passed through unchanged.
    let png = png_bytes(832, 480, |x, y| [(x % 256) as u8, (y % 256) as u8, 7]);
    let j = ok(&i2v(ImageSource::InlineBase64(b64(&png))));
    let i = decoded(&j);
    assert_eq!(&i.data[..6], &[0, 0, 7, 1, 0, 7]);
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    // A tiny PNG that declares 65536 x 65536 pixels: refused before any
    // pixel is decoded (the IDAT is never read).
    let mut png = png_bytes(1, 1, |_, _| [0, 0, 0]);
    // IHDR width/height are bytes 16..24; its CRC (29..33) is not checked
    // by the header read, but keep it honest anyway.
    png[16..20].copy_from_slice(&65536u32.to_be_bytes());
    png[20..24].copy_from_slice(&65536u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let msg = invalid(
        &i2v(ImageSource::InlineBase64(b64(&png))),
        "image",
        "image is 65536x65536",
    );
    assert!(msg.contains("header is checked before decoding"), "{msg}");
    // Within the side limit but over the pixel budget.
    png[16..20].copy_from_slice(&8000u32.to_be_bytes());
    png[20..24].copy_from_slice(&8000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    invalid(
        &i2v(ImageSource::InlineBase64(b64(&png))),
        "image",
        "image is 8000x8000",
    );
}

/// CRC-32 (IEEE), for hand-made PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn an_image_key_outside_the_tenants_prefix_is_refused() {
    for key in [
        "globex/inputs/first.png",
        "jobs/acme/j1.json",
        "first.png",
        "checkpoints/acme/x",
    ] {
        invalid(
            &i2v(ImageSource::Key(key.into())),
            "image",
            "tenant's own prefix",
        );
    }
}

#[test]
fn image_key_stays_a_key() {
    let j = ok(&i2v(ImageSource::Key("acme/uploads/first.png".into())));
    assert!(matches!(&j.image, Some(ImageInput::Key(k)) if k == "acme/uploads/first.png"));
}

#[test]
fn json_parses_defaults_and_roundtrips() {
    let s = JobSpec::from_json(&format!(r#"{{{BASE_JSON}}}"#)).unwrap();
    assert_eq!(
        (s.mode, s.audio, s.tier),
        (Mode::Standard, false, Tier::Free)
    );
    let json = r#"{"job_id":"j1","tenant":"acme","tier":"premium","kind":"i2v","prompt":"p",
        "negative_prompt":"blurry","image":{"key":"acme/a.png"},"resolution":"720p","seconds":3.5,
        "fps":30,"mode":"cinema","steps":40,"guidance":2.5,"seed":99,"model":"ltx-tiny","audio":false}"#;
    let s = JobSpec::from_json(json).unwrap();
    assert_eq!(s.image, Some(ImageSource::Key("acme/a.png".into())));
    assert_eq!(JobSpec::from_json(&s.to_json()).unwrap(), s);
    let j = ok(&s);
    assert_eq!(
        (j.width, j.height, j.num_frames, j.seed),
        (1280, 704, 105, 99)
    );
    let s2 = JobSpec::from_json(r#"{"tenant":"a","tier":"free","kind":"i2v","prompt":"p","resolution":"480p","image":{"inline_base64":"AAAA"}}"#).unwrap();
    assert_eq!(s2.image, Some(ImageSource::InlineBase64("AAAA".into())));
}

#[test]
fn proto_roundtrip() {
    let png = png_bytes(16, 16, |x, y| [x as u8 * 16, y as u8 * 16, 0]);
    let mut s = i2v(ImageSource::InlineBase64(b64(&png)));
    s.job_id = Some("job-1".into());
    s.negative_prompt = Some("blurry".into());
    s.seconds = Some(2.5);
    s.fps = Some(25.0);
    s.mode = Mode::Realtime;
    s.steps = Some(4);
    s.guidance = Some(1.0);
    s.seed = Some(u64::MAX);
    s.model = Some("ltx-tiny".into());
    s.tier = Tier::Premium;
    for spec in [s, t2v(), i2v(ImageSource::Key("k/a.png".into()))] {
        let p = proto::JobSpec::try_from(&spec).unwrap();
        let wire = p.encode_to_vec();
        let back = proto::JobSpec::decode(wire.as_slice()).unwrap();
        assert_eq!(back, p);
        assert_eq!(JobSpec::try_from(back).unwrap(), spec);
    }
    // Unspecified mode means standard.
    let mut p = proto::JobSpec::try_from(&t2v()).unwrap();
    p.mode = 0;
    assert_eq!(JobSpec::try_from(p).unwrap().mode, Mode::Standard);
}

#[test]
fn config_dir_loads_and_matches_builtin() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let c = AdmissionConfig::load(&dir).unwrap();
    let b = AdmissionConfig::builtin_default().unwrap();
    assert_eq!(c.modes, b.modes);
    assert_eq!(
        (c.default_model.as_str(), b.default_model.as_str()),
        ("ltx-demo", "ltx-demo")
    );
    assert_eq!(c.worker_vram_bytes, 80 << 30);
    assert_eq!(
        c.model_ids(),
        ["ltx-demo", "ltx-tiny", "wan-tiny", "wan-tiny-i2v"]
    );
    assert_eq!(c.model_ids(), b.model_ids());
    for (x, y) in c.models.iter().zip(&b.models) {
        assert_eq!(
            (x.architecture, &x.kinds, x.rules),
            (y.architecture, &y.kinds, y.rules)
        );
    }
    assert!(!c.models[0].untrained && c.models[1].untrained);
    assert!(c.models[0].demo.is_some() && c.models[1].demo.is_none());
    for (x, y) in c.models.iter().zip(&b.models) {
        assert_eq!(x.weights_bytes, y.weights_bytes);
    }
    assert_eq!(
        (
            c.modes.realtime.steps,
            c.modes.standard.steps,
            c.modes.cinema.steps
        ),
        (8, 30, 50)
    );
}

#[test]
fn config_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let modes = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/modes.toml"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("modes.toml"), &modes).unwrap();
    let write_models = |text: &str| std::fs::write(tmp.path().join("models.toml"), text).unwrap();

    write_models("[[model]]\nid = \"m\"\npath = \"builtin:tiny\"\ntypo = 1\n");
    let e = AdmissionConfig::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("models.toml") && e.contains("typo"), "{e}");

    write_models("default_model = \"x\"\n[[model]]\nid = \"m\"\npath = \"builtin:tiny\"\n");
    let e = AdmissionConfig::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("default_model \"x\""), "{e}");

    write_models("[[model]]\nid = \"real\"\npath = \"no-such-checkpoint\"\n");
    let e = AdmissionConfig::load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("real") && e.contains("no-such-checkpoint"),
        "{e}"
    );

    // A checkpoint directory: geometry and weight sizes come from the runtime.
    let ck = tmp.path().join("ck");
    vidflow_gpu::tiny::write_checkpoint(&ck).unwrap();
    write_models("worker_vram_bytes = 4294967296\n[[model]]\nid = \"ck\"\npath = \"ck\"\n");
    let c = AdmissionConfig::load(tmp.path()).unwrap();
    assert_eq!(c.worker_vram_bytes, 4 << 30);
    assert_eq!(c.models[0].dir.as_deref(), Some(ck.as_path()));
    assert_eq!(c.models[0].weights_bytes, cfg().models[0].weights_bytes);
    let mut s = t2v();
    s.model = Some("ck".into());
    assert_eq!(validate(&s, &c).unwrap().model_id, "ck");
}

#[test]
fn native_resolution_takes_the_demo_models_own_settings() {
    let cfg = AdmissionConfig::builtin_default().unwrap();
    assert_eq!(cfg.default_model, "ltx-demo");
    let d = vidflow_gpu::demo::info(vidflow_gpu::demo::default_dir())
        .unwrap()
        .expect("the shipped demo model describes itself");
    let mut spec = JobSpec::new(
        "acme",
        Tier::Standard,
        JobKind::T2v,
        "a red circle",
        "native",
    );
    let v = validate(&spec, &cfg).unwrap();
    assert_eq!(
        (v.width, v.height, v.num_frames, v.fps, v.steps, v.guidance),
        (
            d.width as u32,
            d.height as u32,
            d.num_frames as u32,
            d.fps,
            d.steps as u32,
            d.guidance_scale
        )
    );
    assert_eq!(v.model_id, "ltx-demo");
    // What a job names itself still wins.
    spec.steps = Some(5);
    spec.seconds = Some(1.0);
    let v = validate(&spec, &cfg).unwrap();
    assert_eq!((v.steps, v.num_frames), (5, 9));
    // A model without a native size says so, naming the field.
    spec.model = Some("ltx-tiny".into());
    invalid_with(&spec, &cfg, "resolution", "no native size");
}

// ------------------------------------------------- conditioned jobs (media)

fn key(k: &str) -> ImageSource {
    ImageSource::Key(k.into())
}

fn cond(
    image: Option<ImageSource>,
    video: Option<ImageSource>,
    at: u32,
) -> vidflow_job::ConditionSpec {
    vidflow_job::ConditionSpec {
        image,
        video,
        frame_index: at,
        strength: None,
    }
}

/// 17 frames at 24 fps, so frame indices 0..=16 are valid.
fn short() -> JobSpec {
    let mut s = t2v();
    s.frames = Some(17);
    s
}

#[test]
fn keyframe_conditions_are_validated_field_by_field() {
    let mut s = short();
    s.conditions = vec![
        cond(Some(key("acme/in/a.png")), None, 0),
        cond(None, Some(key("acme/in/b.mp4")), 8),
    ];
    s.conditions[1].strength = Some(0.7);
    let v = ok(&s);
    assert_eq!(v.media.conditions.len(), 2);
    assert_eq!(v.media.conditions[0].strength, 1.0, "default strength");
    assert_eq!(
        v.media.conditions[1].media.kind,
        vidflow_job::MediaKind::Video
    );

    let mut bad = short();
    bad.conditions = vec![cond(Some(key("acme/in/a.png")), None, 17)];
    invalid(
        &bad,
        "conditions[0].frame_index",
        "past the video's last frame 16",
    );
    bad.conditions = vec![cond(
        Some(key("acme/in/a.png")),
        Some(key("acme/in/b.mp4")),
        0,
    )];
    invalid(&bad, "conditions[0]", "exactly one of image and video");
    bad.conditions = vec![cond(None, None, 0)];
    invalid(&bad, "conditions[0]", "exactly one of image and video");
    bad.conditions = vec![cond(Some(key("acme/in/a.png")), None, 0)];
    bad.conditions[0].strength = Some(1.5);
    invalid(&bad, "conditions[0].strength", "0..=1");
    bad.conditions = vec![cond(Some(key("other/in/a.png")), None, 0)];
    invalid(&bad, "conditions[0].image", "tenant's own prefix");
    bad.conditions = vec![cond(
        None,
        Some(ImageSource::InlineBase64(b64(b"not a video at all"))),
        0,
    )];
    invalid(&bad, "conditions[0].video", "not an MP4");
    bad.conditions = (0..9)
        .map(|i| cond(Some(key("acme/in/a.png")), None, i))
        .collect();
    invalid(&bad, "conditions", "at most 8");
    let mut on_i2v = i2v(key("acme/in/first.png"));
    on_i2v.conditions = vec![cond(Some(key("acme/in/a.png")), None, 0)];
    invalid(&on_i2v, "conditions", "kind \"t2v\"");
}

#[test]
fn v2v_needs_its_video_and_strength_and_only_v2v_takes_them() {
    let mut s = short();
    s.kind = JobKind::V2v;
    s.video = Some(key("acme/in/src.mp4"));
    s.strength = Some(0.4);
    let v = ok(&s);
    assert_eq!(v.kind, JobKind::V2v);
    assert_eq!(v.media.v2v.as_ref().unwrap().1, 0.4);

    let mut bad = s.clone();
    bad.video = None;
    invalid(&bad, "video", "requires a source video");
    let mut bad = s.clone();
    bad.strength = None;
    invalid(&bad, "strength", "requires a strength");
    let mut bad = s.clone();
    bad.strength = Some(0.0);
    invalid(&bad, "strength", "(0, 1]");
    let mut bad = s.clone();
    bad.image = Some(key("acme/in/a.png"));
    invalid(&bad, "image", "takes no image");
    let mut t = short();
    t.video = Some(key("acme/in/src.mp4"));
    invalid(&t, "video", "only kind \"v2v\"");
    let mut t = short();
    t.strength = Some(0.5);
    invalid(&t, "strength", "only kind \"v2v\"");
}

#[test]
fn extend_takes_an_8k_plus_1_overlap_shorter_than_the_job() {
    let mut s = short();
    s.extend = Some(vidflow_job::ExtendSpec {
        video: key("acme/in/src.mp4"),
        overlap_frames: None,
    });
    assert_eq!(
        ok(&s).media.extend.as_ref().unwrap().1,
        9,
        "default overlap"
    );
    for bad_overlap in [0, 8, 17] {
        let mut b = s.clone();
        b.extend.as_mut().unwrap().overlap_frames = Some(bad_overlap);
        invalid(&b, "extend.overlap_frames", "8k+1");
    }
    let mut b = s.clone();
    b.conditions = vec![cond(Some(key("acme/in/a.png")), None, 0)];
    invalid(&b, "extend", "either extend or conditions");
}

#[test]
fn conditioned_specs_survive_the_protobuf_round_trip() {
    let mut s = short();
    s.conditions = vec![
        cond(
            Some(ImageSource::InlineBase64(b64(&png_bytes(8, 8, |_, _| {
                [1, 2, 3]
            })))),
            None,
            0,
        ),
        cond(None, Some(key("acme/in/b.mp4")), 8),
    ];
    s.conditions[1].strength = Some(0.5);
    let p = proto::JobSpec::try_from(&s).unwrap();
    let back =
        JobSpec::try_from(proto::JobSpec::decode(p.encode_to_vec().as_slice()).unwrap()).unwrap();
    assert_eq!(back, s);
    let mut v = short();
    v.kind = JobKind::V2v;
    v.video = Some(key("acme/in/src.mp4"));
    v.strength = Some(0.3);
    let back = JobSpec::try_from(proto::JobSpec::try_from(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    let mut e = short();
    e.extend = Some(vidflow_job::ExtendSpec {
        video: key("acme/in/src.mp4"),
        overlap_frames: Some(17),
    });
    let back = JobSpec::try_from(proto::JobSpec::try_from(&e).unwrap()).unwrap();
    assert_eq!(back, e);
}

#[test]
fn long_videos_are_sized_by_one_segment_and_take_conditions_in_it() {
    // 120 s of 1080p whole would need 2881 frames of host memory (about
    // 168 GiB); as a chain it holds one 257-frame segment (about 15 GiB).
    let mut s = t2v();
    s.resolution = "1080p".into();
    s.seconds = Some(120.0);
    let v = ok(&s);
    assert_eq!(v.num_frames, 2881);
    assert!(cfg().chain.chained(v.num_frames));

    let mut s = t2v();
    s.seconds = Some(60.0);
    s.conditions = vec![vidflow_job::spec::ConditionSpec {
        image: Some(ImageSource::Key("acme/in/a.png".into())),
        video: None,
        frame_index: 300,
        strength: None,
    }];
    invalid(
        &s,
        "conditions[0].frame_index",
        "first segment (frames 0..257)",
    );
    s.conditions[0].frame_index = 256;
    ok(&s);

    let mut s = t2v();
    s.kind = JobKind::V2v;
    s.seconds = Some(60.0);
    s.video = Some(ImageSource::Key("acme/in/a.mp4".into()));
    s.strength = Some(0.5);
    invalid(&s, "frames", "at most 257 frames (one segment)");
}

#[test]
fn image_cond_noise_scale_is_a_share_and_needs_a_condition() {
    let mut s = t2v();
    s.image_cond_noise_scale = Some(0.0);
    invalid(
        &s,
        "image_cond_noise_scale",
        "only applies to jobs with conditions or extend",
    );
    s.conditions = vec![vidflow_job::spec::ConditionSpec {
        image: Some(ImageSource::Key("acme/in/a.png".into())),
        video: None,
        frame_index: 0,
        strength: None,
    }];
    assert_eq!(ok(&s).media.noise_scale, Some(0.0));
    s.image_cond_noise_scale = Some(1.5);
    invalid(&s, "image_cond_noise_scale", "0..=1");
    s.image_cond_noise_scale = Some(f64::NAN);
    invalid(&s, "image_cond_noise_scale", "0..=1");
    let json = r#"{"tenant":"acme","tier":"free","kind":"t2v","prompt":"p","resolution":"480p",
        "conditions":[{"image":{"key":"acme/in/a.png"},"frame_index":0}],"image_cond_noise_scale":0.05}"#;
    let spec = JobSpec::from_json(json).unwrap();
    let back = JobSpec::try_from(vidflow_job::proto::JobSpec::try_from(&spec).unwrap()).unwrap();
    assert_eq!(back.image_cond_noise_scale, Some(0.05));
}

#[test]
fn a_lora_is_one_key_of_the_tenant_or_one_registry_adapter_of_the_model() {
    use vidflow_job::validate::LoraSource;
    use vidflow_job::LoraSpec;
    let lora = |key: Option<&str>, id: Option<&str>, strength: Option<f64>| {
        let mut s = t2v();
        s.lora = Some(LoraSpec {
            key: key.map(str::to_string),
            id: id.map(str::to_string),
            strength,
        });
        s
    };
    let v = ok(&lora(Some("acme/loras/a.safetensors"), None, Some(0.5)));
    let l = v.lora.unwrap();
    assert_eq!(l.source, LoraSource::Key("acme/loras/a.safetensors".into()));
    assert_eq!(l.strength, 0.5);
    invalid(
        &lora(Some("globex/loras/a.safetensors"), None, None),
        "lora.key",
        "acme/",
    );
    invalid(
        &lora(Some("acme/a"), Some("x"), None),
        "lora",
        "exactly one",
    );
    invalid(&lora(None, None, None), "lora", "exactly one");
    invalid(
        &lora(Some("acme/a"), None, Some(3.0)),
        "lora.strength",
        "(0, 2]",
    );
    invalid(
        &lora(Some("acme/a"), None, Some(0.0)),
        "lora.strength",
        "(0, 2]",
    );
    let mut cfg = cfg();
    cfg.loras.push(vidflow_job::config::LoraEntry {
        id: "grain".into(),
        model: "ltx-tiny".into(),
        path: "/adapters/grain.safetensors".into(),
    });
    let v = validate(&lora(None, Some("grain"), None), &cfg).unwrap();
    assert_eq!(
        v.lora.unwrap().source,
        LoraSource::Registry {
            id: "grain".into(),
            path: "/adapters/grain.safetensors".into()
        }
    );
    invalid_with(&lora(None, Some("nope"), None), &cfg, "lora.id", "grain");
    // JSON and protobuf carry it alike.
    let s = lora(Some("acme/loras/a.safetensors"), None, Some(1.5));
    let p = proto::JobSpec::try_from(&s).unwrap();
    assert_eq!(JobSpec::try_from(p).unwrap(), s);
    let j = serde_json::to_string(&s).unwrap();
    assert!(
        j.contains(r#""lora":{"key":"acme/loras/a.safetensors","strength":1.5}"#),
        "{j}"
    );
}

#[test]
fn wan_models_are_validated_by_their_own_rules() {
    let mut cfg = cfg();
    let e = vidflow_job::config::ModelEntry::new(
        "wan-tiny",
        vidflow_job::config::BUILTIN_WAN_TINY,
        vidflow_job::config::Architecture::Wan,
        true,
    );
    cfg.models
        .push(vidflow_job::ModelProfile::resolve(&e, std::path::Path::new(".")).unwrap());
    let mut s = t2v();
    s.model = Some("wan-tiny".into());
    s.resolution = "272x256".into(); // 16k: fine for Wan, not for LTX
    s.frames = None;
    s.seconds = Some(1.0);
    s.fps = None;
    let v = validate(&s, &cfg).unwrap();
    assert_eq!(
        (v.width, v.height, v.num_frames, v.fps),
        (272, 256, 17, 16.0)
    );
    s.frames = Some(13);
    s.seconds = None;
    assert_eq!(validate(&s, &cfg).unwrap().num_frames, 13);
    s.frames = Some(15);
    invalid_with(&s, &cfg, "frames", "4n+1");
    s.frames = Some(85);
    invalid_with(&s, &cfg, "frames", "1..=81");
    s.frames = Some(17);
    s.fps = Some(24.0);
    invalid_with(&s, &cfg, "fps", "16 fps only");
    s.fps = None;
    s.resolution = "264x256".into();
    invalid_with(&s, &cfg, "resolution", "multiple of 16");
    s.resolution = "256x256".into();
    s.kind = JobKind::V2v;
    invalid_with(&s, &cfg, "kind", "serves t2v");
    // The same size is refused for an LTX model.
    let mut l = t2v();
    l.resolution = "272x256".into();
    invalid(&l, "resolution", "multiple of 32");
}
