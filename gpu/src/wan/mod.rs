//! Wan 2.1, the second model family: the transformer (text- and
//! image-to-video), the VAE, sampling as the reference runs it
//! (`pipeline`), the same as the serving stages run it (`serve`), and the
//! built-in tiny models (`tiny`). Its text encoder is UMT5 (`crate::t5`),
//! its image encoder CLIP (`crate::clip`), its sampler UniPC
//! (`crate::unipc`).

pub mod pipeline;
pub mod serve;
pub mod state;
pub mod tiny;
pub mod transformer;
pub mod vae;

pub use transformer::{WanConfig, WanTransformer};
pub use vae::{WanVae, WanVaeConfig};
