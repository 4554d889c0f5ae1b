//! Datasets: the registry (`pipeline/datasets.toml`), fetching with checksums and resume, safe
//! extraction, the layout parsers, the parsed index with its structural checks, and the
//! synthetic SOP-scale generator.

pub mod archive;
pub mod content;
pub mod crop_cache;
pub mod fetch;
pub mod index;
pub mod index_file;
pub mod jpeg;
pub mod layout;
pub mod loader;
pub mod lock;
pub mod registry;
pub mod sampler;
pub mod sources;
pub mod synth;
pub mod transform;
