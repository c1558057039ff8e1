//! `AutoencoderKLLTXVideo`'s `config.json`, with diffusers' defaults.

use serde::Deserialize;

use crate::error::{GpuError, Result};

fn d_3() -> usize {
    3
}
fn d_latent() -> usize {
    128
}
fn d_blocks() -> Vec<usize> {
    vec![128, 256, 512, 512]
}
fn d_down_types() -> Vec<String> {
    vec!["LTXVideoDownBlock3D".to_string(); 4]
}
fn d_layers() -> Vec<usize> {
    vec![4, 3, 3, 3, 4]
}
fn d_scaling() -> Vec<bool> {
    vec![true, true, true, false]
}
fn d_noise() -> Vec<bool> {
    vec![false; 5]
}
fn d_downsample() -> Vec<String> {
    vec!["conv".to_string(); 4]
}
fn d_residual() -> Vec<bool> {
    vec![false; 4]
}
fn d_factor() -> Vec<usize> {
    vec![1; 4]
}
fn d_patch() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_eps() -> f64 {
    1e-6
}
fn d_scale() -> f64 {
    1.0
}
fn d_true() -> bool {
    true
}

/// The VAE configuration under diffusers' key names. Missing optional keys
/// take diffusers' defaults (the LTX-Video 0.9.0 layout); unknown keys are
/// ignored; `null` compression ratios mean "derive from the layout".
#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_3")]
    pub in_channels: usize,
    #[serde(default = "d_3")]
    pub out_channels: usize,
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    #[serde(default = "d_blocks")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_down_types")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_blocks")]
    pub decoder_block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: Vec<usize>,
    #[serde(default = "d_layers")]
    pub decoder_layers_per_block: Vec<usize>,
    #[serde(default = "d_scaling")]
    pub spatio_temporal_scaling: Vec<bool>,
    #[serde(default = "d_scaling")]
    pub decoder_spatio_temporal_scaling: Vec<bool>,
    #[serde(default = "d_noise")]
    pub decoder_inject_noise: Vec<bool>,
    #[serde(default = "d_downsample")]
    pub downsample_type: Vec<String>,
    #[serde(default = "d_residual")]
    pub upsample_residual: Vec<bool>,
    #[serde(default = "d_factor")]
    pub upsample_factor: Vec<usize>,
    #[serde(default)]
    pub timestep_conditioning: bool,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_one")]
    pub patch_size_t: usize,
    #[serde(default = "d_eps")]
    pub resnet_norm_eps: f64,
    #[serde(default = "d_scale")]
    pub scaling_factor: f64,
    #[serde(default = "d_true")]
    pub encoder_causal: bool,
    #[serde(default)]
    pub decoder_causal: bool,
    #[serde(default)]
    pub spatial_compression_ratio: Option<usize>,
    #[serde(default)]
    pub temporal_compression_ratio: Option<usize>,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: d_latent(),
            block_out_channels: d_blocks(),
            down_block_types: d_down_types(),
            decoder_block_out_channels: d_blocks(),
            layers_per_block: d_layers(),
            decoder_layers_per_block: d_layers(),
            spatio_temporal_scaling: d_scaling(),
            decoder_spatio_temporal_scaling: d_scaling(),
            decoder_inject_noise: d_noise(),
            downsample_type: d_downsample(),
            upsample_residual: d_residual(),
            upsample_factor: d_factor(),
            timestep_conditioning: false,
            patch_size: d_patch(),
            patch_size_t: 1,
            resnet_norm_eps: d_eps(),
            scaling_factor: d_scale(),
            encoder_causal: true,
            decoder_causal: false,
            spatial_compression_ratio: None,
            temporal_compression_ratio: None,
        }
    }
}

impl VaeConfig {
    fn n_scaling(&self) -> u32 {
        self.spatio_temporal_scaling.iter().filter(|s| **s).count() as u32
    }

    /// Pixels per latent along height/width (32 for LTX-Video).
    pub fn spatial_compression(&self) -> usize {
        self.spatial_compression_ratio
            .unwrap_or_else(|| self.patch_size * 2usize.pow(self.n_scaling()))
    }

    /// Frames per latent frame after the first (8 for LTX-Video).
    pub fn temporal_compression(&self) -> usize {
        self.temporal_compression_ratio
            .unwrap_or_else(|| self.patch_size_t * 2usize.pow(self.n_scaling()))
    }

    /// Checks what the module constructors rely on, naming the key at fault.
    pub(crate) fn validate(&self) -> Result<()> {
        let err = |k: &str, m: String| GpuError::config("VAE config", format!("`{k}`: {m}"));
        if self.patch_size_t != 1 {
            return Err(err(
                "patch_size_t",
                format!(
                    "only 1 is supported (as in the reference), got {}",
                    self.patch_size_t
                ),
            ));
        }
        for (k, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("patch_size", self.patch_size),
        ] {
            if v == 0 {
                return Err(err(k, "must be at least 1".into()));
            }
        }
        for (k, v) in [
            ("block_out_channels", &self.block_out_channels),
            (
                "decoder_block_out_channels",
                &self.decoder_block_out_channels,
            ),
            ("upsample_factor", &self.upsample_factor),
        ] {
            if v.is_empty() || v.contains(&0) {
                return Err(err(
                    k,
                    "must be a non-empty list of positive integers".into(),
                ));
            }
        }
        if self.n_scaling() > 16 {
            return Err(err(
                "spatio_temporal_scaling",
                "too many scaling stages".into(),
            ));
        }
        Ok(())
    }
}

/// `list[i]`, or an error naming the key when the list is too short.
pub(crate) fn at<T: Clone>(list: &[T], i: usize, key: &str) -> Result<T> {
    list.get(i).cloned().ok_or_else(|| {
        GpuError::config(
            "VAE config",
            format!(
                "`{key}` has {} entries, needs at least {}",
                list.len(),
                i + 1
            ),
        )
    })
}

/// `reversed(list)[i]`, as the reference decoder indexes its lists.
pub(crate) fn at_rev<T: Clone>(list: &[T], i: usize, key: &str) -> Result<T> {
    if i >= list.len() {
        return at(list, i, key);
    }
    Ok(list[list.len() - 1 - i].clone())
}
