//! `POST /v1/videos` bodies, JSON or multipart, to a [`JobSpec`].
//!
//! The convention's fields (`prompt`, `model`, `seconds`, `size`,
//! `input_reference`) plus ours (`negative_prompt`, `tier`, `mode`, `seed`,
//! `steps`, `guidance`, `fps`). Unknown fields and wrong types are 400s
//! naming the field. The spec is then validated exactly as every other
//! door validates it; its errors name the field as the client wrote it
//! (`size`, not the spec's `resolution`).

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use vidflow_job::{AdmissionConfig, JobError, JobSpec};

use super::HttpError;

/// A JSON create request. Multipart forms carry the same names as text
/// parts, and `input_reference` as a file part.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVideo {
    pub prompt: String,
    #[serde(default)]
    pub model: Option<String>,
    /// Seconds of video; the convention sends a string (`"4"`), a number
    /// is taken too.
    #[serde(default)]
    pub seconds: Option<Seconds>,
    /// `WxH` (`"1280x720"`), a preset (`"480p"`) or `"native"`.
    #[serde(default)]
    pub size: Option<String>,
    /// The first frame: `{"image_url": "data:image/png;base64,..."}` or
    /// `{"key": "<tenant>/..."}` (an object in the tenant's store).
    #[serde(default)]
    pub input_reference: Option<InputReference>,
    #[serde(default)]
    pub negative_prompt: Option<String>,
    #[serde(default)]
    pub tier: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub steps: Option<u32>,
    #[serde(default)]
    pub guidance: Option<f64>,
    #[serde(default)]
    pub fps: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Seconds {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputReference {
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

/// Fields of a multipart form (text parts; `input_reference` is a file).
const FORM_FIELDS: &[&str] = &[
    "prompt",
    "model",
    "seconds",
    "size",
    "negative_prompt",
    "tier",
    "mode",
    "seed",
    "steps",
    "guidance",
    "fps",
];

/// The request field a spec field came from.
fn client_field(spec_field: &str) -> String {
    let (head, rest) = match spec_field.find(['.', '[']) {
        Some(i) => spec_field.split_at(i),
        None => (spec_field, ""),
    };
    let head = match head {
        "resolution" => "size",
        "image" => "input_reference",
        h => h,
    };
    format!("{head}{rest}")
}

fn from_job_error(e: JobError) -> HttpError {
    let spec_field = e.field().to_string();
    let field = client_field(&spec_field);
    let mut msg = e.to_string();
    if field != spec_field {
        msg = format!("{field}: {msg}");
    }
    HttpError::invalid(&field, msg)
}

/// Parses a JSON body.
pub fn parse_json(body: &[u8]) -> Result<CreateVideo, HttpError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| HttpError::invalid("(body)", format!("not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(HttpError::invalid(
            "(body)",
            "the body must be a JSON object",
        ));
    }
    vidflow_job::spec::deserialize_named::<CreateVideo>(&value).map_err(from_job_error)
}

/// Builds a request from multipart text parts and an optional file.
pub fn from_form(
    texts: Vec<(String, String)>,
    image: Option<Vec<u8>>,
) -> Result<CreateVideo, HttpError> {
    let mut obj = Map::new();
    for (name, text) in texts {
        if !FORM_FIELDS.contains(&name.as_str()) {
            return Err(HttpError::invalid(
                &name,
                format!(
                    "unknown field `{name}` (known: {}, input_reference)",
                    FORM_FIELDS.join(", ")
                ),
            ));
        }
        if obj.contains_key(&name) {
            return Err(HttpError::invalid(&name, format!("`{name}` given twice")));
        }
        // Numbers arrive as text in a form.
        let v = match name.as_str() {
            "seed" | "steps" => text.trim().parse::<u64>().map(Value::from).map_err(|_| {
                HttpError::invalid(&name, format!("invalid {name} = {text:?}: a whole number"))
            })?,
            "guidance" | "fps" => text.trim().parse::<f64>().map(Value::from).map_err(|_| {
                HttpError::invalid(&name, format!("invalid {name} = {text:?}: a number"))
            })?,
            _ => Value::String(text),
        };
        obj.insert(name, v);
    }
    let mut req = vidflow_job::spec::deserialize_named::<CreateVideo>(&Value::Object(obj))
        .map_err(from_job_error)?;
    if let Some(bytes) = image {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        req.input_reference = Some(InputReference {
            image_url: Some(format!("data:application/octet-stream;base64,{b64}")),
            key: None,
        });
    }
    Ok(req)
}

fn seconds_value(s: &Seconds) -> Result<f64, HttpError> {
    let v = match s {
        Seconds::Number(v) => *v,
        Seconds::Text(t) => t.trim().parse::<f64>().map_err(|_| {
            HttpError::invalid(
                "seconds",
                format!("invalid seconds = {t:?}: a number of seconds"),
            )
        })?,
    };
    Ok(v)
}

/// The spec a request stands for, validated as every door validates a job
/// spec.
pub fn to_spec(
    req: CreateVideo,
    tenant: &str,
    admission: &AdmissionConfig,
) -> Result<JobSpec, HttpError> {
    let model = req
        .model
        .clone()
        .unwrap_or_else(|| admission.default_model.clone());
    // A model trained at one size defaults to it; others to 480p.
    let native = admission
        .models
        .iter()
        .any(|m| m.id == model && m.demo.is_some());
    let size = req.size.clone().unwrap_or_else(|| {
        if native {
            vidflow_job::validate::NATIVE.to_string()
        } else {
            "480p".to_string()
        }
    });
    let mut v = json!({
        "tenant": tenant,
        "tier": req.tier.as_deref().unwrap_or("standard"),
        "kind": if req.input_reference.is_some() { "i2v" } else { "t2v" },
        "prompt": req.prompt,
        "resolution": size,
        "mode": req.mode.as_deref().unwrap_or("standard"),
        "model": model,
    });
    let o = v.as_object_mut().expect("an object");
    if let Some(s) = &req.seconds {
        o.insert("seconds".into(), json!(seconds_value(s)?));
    }
    if let Some(n) = req.negative_prompt {
        o.insert("negative_prompt".into(), json!(n));
    }
    for (k, val) in [
        ("seed", req.seed.map(|x| json!(x))),
        ("steps", req.steps.map(|x| json!(x))),
        ("guidance", req.guidance.map(|x| json!(x))),
        ("fps", req.fps.map(|x| json!(x))),
    ] {
        if let Some(val) = val {
            o.insert(k.into(), val);
        }
    }
    if let Some(r) = req.input_reference {
        let source = match (r.image_url, r.key) {
            (Some(url), None) => {
                let data = url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .map(|(_, b64)| b64.to_string())
                    .ok_or_else(|| {
                        HttpError::invalid(
                            "input_reference.image_url",
                            "input_reference.image_url: a data: URL with base64 content \
                             (remote URLs are not fetched)",
                        )
                    })?;
                json!({ "inline_base64": data })
            }
            (None, Some(key)) => json!({ "key": key }),
            _ => {
                return Err(HttpError::invalid(
                    "input_reference",
                    "input_reference: exactly one of image_url and key",
                ))
            }
        };
        o.insert("image".into(), source);
    }
    let spec = JobSpec::from_json_value(v).map_err(from_job_error)?;
    // Validated here too (submit validates again), so a refusal names the
    // field as this client wrote it.
    vidflow_job::validate(&spec, admission).map_err(from_job_error)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> AdmissionConfig {
        AdmissionConfig::builtin_tiny()
    }

    fn png() -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(64, 64)
            .write_to(&mut out, image::ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    #[test]
    fn the_conventions_fields_become_a_spec() {
        let r =
            parse_json(br#"{"prompt":"a fox","model":"ltx-tiny","seconds":"2","size":"256x256"}"#)
                .unwrap();
        let s = to_spec(r, "acme", &admission()).unwrap();
        assert_eq!(s.resolution, "256x256");
        assert_eq!(s.seconds, Some(2.0));
        assert_eq!(s.tenant, "acme");
        assert_eq!(s.kind.as_str(), "t2v");
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_the_field() {
        let e = parse_json(br#"{"prompt":"a","colour":"red"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("colour"), "{e}");
        let e = parse_json(br#"{"prompt":"a","seed":"x"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("seed"), "{e}");
        let e = parse_json(br#"{"prompt":7}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"), "{e}");
        let e = parse_json(br#"{"model":"x"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"), "{e}");
        let e = parse_json(b"[1]").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("(body)"), "{e}");
        let r = parse_json(br#"{"prompt":"a","size":"100x100","model":"ltx-tiny"}"#).unwrap();
        let e = to_spec(r, "acme", &admission()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("size"), "{e}");
        let r = parse_json(br#"{"prompt":"a","seconds":"four"}"#).unwrap();
        let e = to_spec(r, "acme", &admission()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("seconds"), "{e}");
        let r = parse_json(br#"{"prompt":"a","tier":"gold"}"#).unwrap();
        let e = to_spec(r, "acme", &admission()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tier"), "{e}");
        let r = parse_json(br#"{"prompt":"a","input_reference":{"image_url":"https://x/y.png"}}"#)
            .unwrap();
        let e = to_spec(r, "acme", &admission()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input_reference.image_url"), "{e}");
    }

    #[test]
    fn forms_take_numbers_as_text_and_refuse_unknown_parts() {
        let r = from_form(
            vec![
                ("prompt".into(), "a fox".into()),
                ("seed".into(), "7".into()),
                ("seconds".into(), "1".into()),
            ],
            Some(png()),
        )
        .unwrap();
        assert_eq!(r.seed, Some(7));
        let s = to_spec(r, "acme", &admission()).unwrap();
        assert_eq!(s.kind.as_str(), "i2v");
        let e = from_form(vec![("prompt".into(), "a".into())], Some(vec![1, 2, 3]))
            .and_then(|r| to_spec(r, "acme", &admission()))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input_reference"), "{e}");
        let e = from_form(
            vec![("prompt".into(), "a".into()), ("x".into(), "1".into())],
            None,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("x"));
        let e = from_form(
            vec![
                ("prompt".into(), "a".into()),
                ("steps".into(), "many".into()),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("steps"));
    }
}
