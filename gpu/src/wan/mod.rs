//! Wan 2.1, the second model family: the transformer (text- and
//! image-to-video), the VAE, and sampling (`pipeline`). Its text encoder is UMT5 (`crate::t5`), its image
//! encoder CLIP (`crate::clip`), its sampler UniPC (`crate::unipc`).

pub mod pipeline;
pub mod transformer;
pub mod vae;

pub use transformer::{WanConfig, WanTransformer};
pub use vae::{WanVae, WanVaeConfig};
